"""tegrastats parsing across JetPack 4-7 lines, parent-rail totals, and robustness on garbage."""

from __future__ import annotations

from datetime import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from power.tegrastats import (
    RailValue,
    TegraLine,
    TegraLog,
    format_summary,
    parse_file,
    parse_line,
    parse_lines,
    summarize,
    total_rule,
)

# The example lines of the power reference, §9.
JP4_TX2 = (
    "VDD_SYS_GPU 182/182 VDD_SYS_SOC 730/730 VDD_4V0_WIFI 0/0 VDD_IN 5297/5297 "
    "VDD_SYS_CPU 1917/1917 VDD_SYS_DDR 1241/1241"
)
JP4_TX2_OLD = (
    "VDD_IN 1038/1134 VDD_CPU 153/153 VDD_GPU 153/153 VDD_SOC 384/384 "
    "VDD_WIFI 38/124 VDD_DDR 192/192"
)
JP4_NANO = "POM_5V_IN 933/933 POM_5V_GPU 0/0 POM_5V_CPU 84/84"
JP4_AGX_XAVIER = "GPU 1155/1155 CPU 385/385 SOC 2504/2503 CV 0/0 VDDRQ 192/192 SYS5V 2692/2692"
JP5 = "11-21-2026 10:15:02 VDD_IN 4824mW/4824mW VDD_CPU_GPU_CV 518mW/518mW VDD_SOC 1475mW/1475mW"
JP7 = "VDD_GPU_SOC 5139mW/5139mW/5139mW"

# Whole lines as the boards print them.
JP4_TX2_FULL = (
    "RAM 2305/7846MB (lfb 1012x4MB) SWAP 0/3923MB (cached 0MB) "
    "CPU [2%@345,off,off,1%@345,0%@345,3%@345] EMC_FREQ 0%@1866 GR3D_FREQ 0%@114 APE 150 "
    "PLL@41C MCPU@41C PMIC@100C Tboard@37C GPU@39.5C BCPU@41C thermal@40.4C Tdiode@38.25C "
    "VDD_SYS_GPU 152/152 VDD_SYS_SOC 685/685 VDD_4V0_WIFI 0/0 VDD_IN 3235/3235 "
    "VDD_SYS_CPU 228/228 VDD_SYS_DDR 460/460"
)
JP4_NANO_FULL = (
    "RAM 1545/3964MB (lfb 5x2MB) SWAP 0/1982MB (cached 0MB) IRAM 0/252kB(lfb 252kB) "
    "CPU [9%@102,6%@102,2%@102,1%@102] EMC_FREQ 0%@1600 GR3D_FREQ 0%@76 APE 25 "
    "PLL@31C CPU@33.5C PMIC@100C GPU@31.5C AO@38C thermal@32.5C "
    "POM_5V_IN 1141/1141 POM_5V_GPU 0/0 POM_5V_CPU 164/164"
)
JP5_ORIN_FULL = (
    "11-21-2026 10:15:02 RAM 2900/15657MB (lfb 2838x4MB) SWAP 0/7828MB (cached 0MB) "
    "CPU [1%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729] EMC_FREQ 0%@2133 "
    "GR3D_FREQ 0%@[305,305] VIC_FREQ 729 APE 174 CV0@-256C CPU@42.375C SOC2@39.5C SOC0@40.5C "
    "CV1@-256C GPU@-256C tj@42.375C SOC1@39.843C CV2@-256C "
    "VDD_IN 4824mW/4824mW VDD_CPU_GPU_CV 518mW/518mW VDD_SOC 1475mW/1475mW"
)
JP6_XAVIER_NX_FULL = (
    "03-02-2026 08:00:59 RAM 3121/7764MB (lfb 35x4MB) SWAP 0/3882MB (cached 0MB) "
    "CPU [4%@1190,2%@1190,off,off,0%@1190,1%@1190] EMC_FREQ 0% GR3D_FREQ 0% "
    "AO@36.5C GPU@37C thermal@37.15C CPU@38.5C "
    "VDD_IN 3911mW/3911mW VDD_CPU_GPU_CV 573mW/573mW VDD_SOC 1186mW/1186mW"
)
JP7_AGX_ORIN_FULL = (
    "05-04-2026 14:02:10 RAM 20101/62841MB (lfb 3x2MB) "
    "CPU [21%@2201,9%@2201,5%@2201,12%@2201,off,off,off,off,31%@2201,6%@2201,4%@2201,25%@2201] "
    "EMC_FREQ 3%@3199 GR3D_FREQ 12%@[1300,1300] NVENC0 off NVDEC0 off VIC off APE 174 "
    "cpu@52.968C/52.1C soc2@48.406C/48.0C tj@53.5C/53.0C "
    "VDD_GPU_SOC 5139mW/5139mW/5139mW VDD_CPU_CV 3268mW/3201mW/3400mW "
    "VIN_SYS_5V0 5500mW/5500mW/5500mW VDDQ_VDD2_1V8AO 801mW/800mW/812mW"
)


def rails_of(line: str) -> dict:
    """Rails as name -> (cur, avg, extra) for compact comparisons."""
    return {n: (v.cur_mw, v.avg_mw, v.extra_mw) for n, v in parse_line(line).rails.items()}


# --- the reference's example lines -------------------------------------------------------------


@pytest.mark.parametrize(
    "line, expected",
    [
        (
            JP4_TX2,
            {
                "VDD_SYS_GPU": (182, 182, None),
                "VDD_SYS_SOC": (730, 730, None),
                "VDD_4V0_WIFI": (0, 0, None),
                "VDD_IN": (5297, 5297, None),
                "VDD_SYS_CPU": (1917, 1917, None),
                "VDD_SYS_DDR": (1241, 1241, None),
            },
        ),
        (
            JP4_TX2_OLD,
            {
                "VDD_IN": (1038, 1134, None),
                "VDD_CPU": (153, 153, None),
                "VDD_GPU": (153, 153, None),
                "VDD_SOC": (384, 384, None),
                "VDD_WIFI": (38, 124, None),
                "VDD_DDR": (192, 192, None),
            },
        ),
        (
            JP4_NANO,
            {
                "POM_5V_IN": (933, 933, None),
                "POM_5V_GPU": (0, 0, None),
                "POM_5V_CPU": (84, 84, None),
            },
        ),
        (
            JP4_AGX_XAVIER,
            {
                "GPU": (1155, 1155, None),
                "CPU": (385, 385, None),
                "SOC": (2504, 2503, None),
                "CV": (0, 0, None),
                "VDDRQ": (192, 192, None),
                "SYS5V": (2692, 2692, None),
            },
        ),
        (
            JP5,
            {
                "VDD_IN": (4824, 4824, None),
                "VDD_CPU_GPU_CV": (518, 518, None),
                "VDD_SOC": (1475, 1475, None),
            },
        ),
        (JP7, {"VDD_GPU_SOC": (5139, 5139, 5139)}),
    ],
    ids=["jp4-tx2", "jp4-tx2-old", "jp4-nano", "jp4-agx-xavier", "jp5", "jp7"],
)
def test_reference_example_rails(line, expected):
    assert rails_of(line) == expected


def test_jp4_lines_have_no_timestamp():
    parsed = parse_line(JP4_TX2)
    assert parsed.timestamp is None
    assert parsed.timestamp_dt is None


def test_jp5_timestamp_is_kept_raw_and_parsed():
    parsed = parse_line(JP5)
    assert parsed.timestamp == "11-21-2026 10:15:02"
    assert parsed.timestamp_dt == datetime(2026, 11, 21, 10, 15, 2)


def test_impossible_timestamp_keeps_the_text_only():
    parsed = parse_line("13-45-2026 10:15:02 VDD_IN 4824mW/4824mW")
    assert parsed.timestamp == "13-45-2026 10:15:02"
    assert parsed.timestamp_dt is None
    assert rails_of(parsed.raw) == {"VDD_IN": (4824, 4824, None)}


# --- full lines ----------------------------------------------------------------------------------


def test_jp4_tx2_full_line():
    parsed = parse_line(JP4_TX2_FULL)
    assert rails_of(JP4_TX2_FULL) == {
        "VDD_SYS_GPU": (152, 152, None),
        "VDD_SYS_SOC": (685, 685, None),
        "VDD_4V0_WIFI": (0, 0, None),
        "VDD_IN": (3235, 3235, None),
        "VDD_SYS_CPU": (228, 228, None),
        "VDD_SYS_DDR": (460, 460, None),
    }
    assert (parsed.ram_used_mb, parsed.ram_total_mb) == (2305, 7846)
    assert parsed.cpu_load_pct == [2, None, None, 1, 0, 3]
    assert parsed.cpu_freq_mhz == [345, None, None, 345, 345, 345]
    assert parsed.gpu_load_pct == 0
    assert parsed.gpu_freq_mhz == [114]
    # "MCPU@41C" must not also produce a "CPU" reading.
    assert parsed.temps_c == {
        "PLL": 41.0,
        "MCPU": 41.0,
        "PMIC": 100.0,
        "Tboard": 37.0,
        "GPU": 39.5,
        "BCPU": 41.0,
        "thermal": 40.4,
        "Tdiode": 38.25,
    }
    assert parsed.timestamp is None


def test_jp4_nano_full_line_ignores_iram():
    parsed = parse_line(JP4_NANO_FULL)
    assert set(parsed.rails) == {"POM_5V_IN", "POM_5V_GPU", "POM_5V_CPU"}
    assert parsed.rails["POM_5V_IN"] == RailValue(1141, 1141)
    assert parsed.cpu_load_pct == [9, 6, 2, 1]
    assert parsed.gpu_freq_mhz == [76]
    assert parsed.temps_c["AO"] == 38.0
    assert parsed.temps_c["CPU"] == 33.5


def test_jp5_orin_full_line():
    parsed = parse_line(JP5_ORIN_FULL)
    assert parsed.timestamp_dt == datetime(2026, 11, 21, 10, 15, 2)
    assert rails_of(JP5_ORIN_FULL) == {
        "VDD_IN": (4824, 4824, None),
        "VDD_CPU_GPU_CV": (518, 518, None),
        "VDD_SOC": (1475, 1475, None),
    }
    assert (parsed.ram_used_mb, parsed.ram_total_mb) == (2900, 15657)
    assert parsed.cpu_load_pct == [1, 0, 0, 0, 0, 0, 0, 0]
    assert parsed.cpu_freq_mhz == [729] * 8
    assert parsed.gpu_load_pct == 0
    assert parsed.gpu_freq_mhz == [305, 305]
    assert parsed.temps_c["tj"] == 42.375
    assert parsed.temps_c["SOC1"] == 39.843
    # Powered-off sensors read -256 and are kept as printed.
    assert parsed.temps_c["CV0"] == -256.0
    assert len(parsed.temps_c) == 9


def test_jp6_gpu_load_without_frequency():
    parsed = parse_line(JP6_XAVIER_NX_FULL)
    assert parsed.gpu_load_pct == 0
    assert parsed.gpu_freq_mhz == []
    assert parsed.cpu_load_pct == [4, 2, None, None, 0, 1]
    assert parsed.temps_c == {"AO": 36.5, "GPU": 37.0, "thermal": 37.15, "CPU": 38.5}
    assert set(parsed.rails) == {"VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"}


def test_jp7_agx_orin_full_line():
    parsed = parse_line(JP7_AGX_ORIN_FULL)
    assert rails_of(JP7_AGX_ORIN_FULL) == {
        "VDD_GPU_SOC": (5139, 5139, 5139),
        "VDD_CPU_CV": (3268, 3201, 3400),
        "VIN_SYS_5V0": (5500, 5500, 5500),
        "VDDQ_VDD2_1V8AO": (801, 800, 812),
    }
    assert parsed.gpu_load_pct == 12
    assert parsed.gpu_freq_mhz == [1300, 1300]
    assert parsed.cpu_load_pct[4:8] == [None] * 4
    # JP7 prints two temperatures per sensor; the first (current) one is kept.
    assert parsed.temps_c == {"cpu": 52.968, "soc2": 48.406, "tj": 53.5}


def test_thor_gpu_clocks_without_load():
    parsed = parse_line(
        "RAM 4722/7844MB (lfb 1x512kB) EMC_FREQ 2%@1866 GR3D_FREQ @[1000,1000,1000]"
    )
    assert parsed.gpu_load_pct is None
    assert parsed.gpu_freq_mhz == [1000, 1000, 1000]
    assert parsed.rails == {}


# --- what must not be a rail ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "RAM 2305/7846MB",
        "SWAP 0/3923MB",
        "IRAM 0/252kB",
        "(lfb 1x4MB)",
        "lfb 1x4MB",
        "EMC_FREQ 0%",
        "EMC_FREQ 0%@1866",
        "GR3D_FREQ 0%@140",
        "GR3D_FREQ 0%@[305,305]",
        "RAM 2305/7846MB (lfb 1012x4MB) SWAP 0/3923MB (cached 0MB) IRAM 0/252kB(lfb 252kB)",
        "APE 150 VIC_FREQ 729 NVENC0 off",
        "VDD_IN 4824mWx/4824mW",
        "VDD_IN 4824/4824W",
        "VDD_IN 4824/4824/",
    ],
)
def test_not_rails(text):
    assert parse_line(text).rails == {}


def test_ram_without_unit_is_still_not_a_rail():
    # Belt and braces for a release that drops the "MB".
    assert parse_line("RAM 2305/7846 VDD_IN 1/2").rails == {"VDD_IN": RailValue(1, 2)}


# --- garbage never raises ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "hello world",
        "VDD_IN",
        "VDD_IN 12/",
        "VDD_IN 1e3/4",
        "\x00\xff\ufffd",
        "CPU [",
        "CPU [,,,]",
        "CPU [999999999999%@1]",
        "GR3D_FREQ 0%@[,]",
        "GR3D_FREQ 0%@[99999999999999]",
        "00-00-0000 99:99:99",
        "VDD_IN " + "9" * 5000 + "/1",
        "X@" + "9" * 5000 + "C",
        "RAM " + "1" * 5000 + "/2MB",
    ],
)
def test_garbage_gives_an_empty_line(text):
    parsed = parse_line(text)
    assert isinstance(parsed, TegraLine)
    assert parsed.rails == {}


@given(st.text())
def test_arbitrary_text_never_raises(text):
    parsed = parse_line(text)
    assert isinstance(parsed, TegraLine)


# Text built from tegrastats' own characters reaches far deeper into the patterns.
TEGRA_ALPHABET = "VDINPOMGRAC_012345689 /mWMBk%@[],.-:offtj\n"


@given(st.text(alphabet=TEGRA_ALPHABET, max_size=200))
def test_tegrastats_like_text_never_raises(text):
    parsed = parse_line(text)
    for value in parsed.rails.values():
        assert value.cur_mw >= 0 and value.avg_mw >= 0


RAIL_NAMES = st.from_regex(r"[A-Z][A-Z0-9_]{0,14}", fullmatch=True).filter(
    lambda n: n not in {"RAM", "SWAP", "IRAM", "LFB"} and not n.endswith("_FREQ")
)
MW = st.integers(min_value=0, max_value=10**9 - 1)


@given(
    st.dictionaries(RAIL_NAMES, st.tuples(MW, MW, st.one_of(st.none(), MW)), max_size=8),
    st.sampled_from(["", "mW"]),
)
def test_printed_rails_parse_back(rails, unit):
    parts = []
    for name, (cur, avg, extra) in rails.items():
        values = [cur, avg] + ([] if extra is None else [extra])
        parts.append(name + " " + "/".join(f"{v}{unit}" for v in values))
    assert rails_of(" ".join(parts)) == rails


# --- totals and summary --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "names, expected",
    [
        (["VDD_IN", "VDD_SYS_CPU", "VDD_SYS_GPU"], ("VDD_IN", ("VDD_IN",))),
        (["POM_5V_IN", "POM_5V_GPU", "POM_5V_CPU"], ("POM_5V_IN", ("POM_5V_IN",))),
        (
            ["GPU", "CPU", "SOC", "CV", "VDDRQ", "SYS5V"],
            ("GPU+CPU+SOC+CV+VDDRQ+SYS5V", ("GPU", "CPU", "SOC", "CV", "VDDRQ", "SYS5V")),
        ),
        (
            ["VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0", "VDDQ_VDD2_1V8AO"],
            (
                "VDD_GPU_SOC+VDD_CPU_CV+VIN_SYS_5V0",
                ("VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0"),
            ),
        ),
        (["GPU", "CPU", "SOC", "CV", "VDDRQ"], None),  # one Xavier rail missing: no guess
        (["VDD_GPU_SOC", "VDD_CPU_CV"], None),
        (["VDD_CPU", "VDD_GPU"], None),
        ([], None),
    ],
)
def test_total_rule(names, expected):
    assert total_rule(names) == expected


def test_summary_tx2_uses_vdd_in_only():
    lines = [
        parse_line(JP4_TX2),
        parse_line(JP4_TX2.replace("VDD_IN 5297/5297", "VDD_IN 5703/5500")),
    ]
    summary = summarize(lines)
    assert summary["lines"] == 2
    assert summary["skipped"] == 0
    assert summary["rails"]["VDD_IN"] == {
        "n": 2,
        "mean_mw": 5500.0,
        "min_mw": 5297,
        "max_mw": 5703,
        "last_avg_mw": 5500,
    }
    assert summary["total_rail"] == "VDD_IN"
    assert summary["total_n"] == 2
    assert summary["total_mean_mw"] == 5500.0


def test_summary_nano_uses_pom_5v_in():
    summary = summarize([parse_line(JP4_NANO), parse_line(JP4_NANO_FULL)])
    assert summary["total_rail"] == "POM_5V_IN"
    assert summary["total_mean_mw"] == (933 + 1141) / 2


def test_summary_agx_xavier_sums_six_on_complete_lines_only():
    partial = "GPU 1000/1000 CPU 1000/1000 SOC 1000/1000 VDDRQ 1000/1000 SYS5V 1000/1000"
    summary = summarize([parse_line(JP4_AGX_XAVIER), parse_line(partial)])
    assert summary["total_rail"] == "GPU+CPU+SOC+CV+VDDRQ+SYS5V"
    assert summary["total_n"] == 1
    assert summary["total_mean_mw"] == 1155 + 385 + 2504 + 0 + 192 + 2692
    assert summary["rails"]["CV"]["n"] == 1
    assert summary["rails"]["GPU"]["n"] == 2


def test_summary_agx_orin_excludes_vddq():
    summary = summarize([parse_line(JP7_AGX_ORIN_FULL)])
    assert summary["total_rail"] == "VDD_GPU_SOC+VDD_CPU_CV+VIN_SYS_5V0"
    assert summary["total_mean_mw"] == 5139 + 3268 + 5500
    assert summary["rails"]["VDDQ_VDD2_1V8AO"]["last_avg_mw"] == 800


def test_summary_without_rule_has_no_total():
    summary = summarize([parse_line("VDD_CPU 100/100 VDD_GPU 200/200")])
    assert summary["total_rail"] is None
    assert summary["total_n"] == 0
    assert summary["total_mean_mw"] is None


def test_summary_of_nothing():
    summary = summarize([])
    assert summary["rails"] == {}
    assert summary["total_rail"] is None
    assert "no rail readings" in format_summary(summary)


# --- files ---------------------------------------------------------------------------------------


def test_parse_file_skips_blank_and_counts_garbage(tmp_path):
    path = tmp_path / "tegrastats.log"
    path.write_bytes(
        b"\n".join(
            [
                JP5_ORIN_FULL.encode(),
                b"",
                b"   ",
                b"tegrastats: some warning",
                JP5_ORIN_FULL.replace("VDD_IN 4824mW/4824mW", "VDD_IN 5176mW/5000mW").encode(),
                b"\xff\xfe garbage \x00",
                b"RAM 2900/15657MB (lfb 2838x4MB) SWAP 0/78",  # cut off mid-write
            ]
        )
        + b"\n"
    )
    log = parse_file(str(path))
    assert isinstance(log, TegraLog)
    assert len(log) == 2
    assert log.skipped == 3
    assert [line.rails["VDD_IN"].cur_mw for line in log] == [4824, 5176]
    summary = summarize(log)
    assert summary["lines"] == 2
    assert summary["skipped"] == 3
    assert summary["total_rail"] == "VDD_IN"
    assert summary["total_mean_mw"] == 5000.0
    assert summary["rails"]["VDD_IN"]["last_avg_mw"] == 5000


def test_parse_lines_of_an_empty_input():
    log = parse_lines([])
    assert list(log) == []
    assert log.skipped == 0


def test_format_summary_table():
    log = parse_lines([JP4_TX2_FULL, "junk", JP4_TX2_FULL])
    text = format_summary(summarize(log))
    lines = text.splitlines()
    assert lines[0] == "2 lines with rails, 1 skipped"
    assert lines[1].split() == [
        "rail",
        "n",
        "mean",
        "mW",
        "min",
        "mW",
        "max",
        "mW",
        "tegrastats",
        "avg",
    ]
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:]}
    assert rows["VDD_IN"] == ["2", "3235.0", "3235", "3235", "3235"]
    assert rows["VDD_SYS_DDR"] == ["2", "460.0", "460", "460", "460"]
    assert lines[-1].split() == ["total", "(VDD_IN)", "2", "3235.0"]
    # Columns line up: every row is as wide as the header or narrower (trailing blanks cut).
    assert all(len(line) <= len(lines[1]) for line in lines[2:])


def test_format_summary_says_when_there_is_no_total():
    text = format_summary(summarize([parse_line("VDD_CPU 100/100 VDD_GPU 200/200")]))
    assert "no rule" in text
    assert "total (" not in text
