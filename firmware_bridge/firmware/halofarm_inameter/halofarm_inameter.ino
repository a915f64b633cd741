// halofarm_inameter -- reference firmware for the halofarm meter line protocol v1
// (firmware_bridge/firmware/PROTOCOL.md): an INA3221 (3 channels) or INA219 (1 channel) on I2C,
// sampled at a fixed rate, streamed as checksummed, sequenced records with the microcontroller's
// micros() as the clock, plus falling edges of the DUT's timestamp pin as events.
//
// Builds with the Arduino IDE / arduino-cli for any board with Wire and attachInterrupt
// (Uno, Nano, Leonardo, SAMD, RP2040, ESP32). Adjust the configuration block, flash, then:
//   [[power.meters]]  name = "dut"  kind = "inameter"  url = "/dev/serial/by-id/..."
//   rails = ["VDD_DUT"]

#include <Arduino.h>
#include <Wire.h>

// ---- configuration -----------------------------------------------------------------------
#define HALO_CHIP_INA3221 1       // 1: INA3221 (3 channels), 0: INA219 (1 channel)
#define HALO_I2C_ADDR 0x40
#define HALO_BAUD 115200
#define HALO_MARKER_PIN 2         // must support attachInterrupt(); the DUT's timestamp GPIO
#define HALO_NAME "inameter-01"   // reported by name%
#define HALO_FW "1.0.0"
#if HALO_CHIP_INA3221
#define HALO_CHANNELS 3
#define HALO_MAX_RATE_HZ 150      // 3 channels x (1.1 ms bus + 1.1 ms shunt) = 6.6 ms
static const uint32_t SHUNT_UOHM[HALO_CHANNELS] = {1000000UL, 1000000UL, 1000000UL};
#else
#define HALO_CHANNELS 1
#define HALO_MAX_RATE_HZ 1000     // INA219 12-bit: 532 us per conversion
static const uint32_t SHUNT_UOHM[HALO_CHANNELS] = {1000000UL};
#endif
// Shunts: 1 ohm gives 40 uA steps on an INA3221 (10 uA on an INA219). The common 0.1 ohm
// breakout resistor (R100) gives 400 uA steps: too coarse for most MCUs.
// -------------------------------------------------------------------------------------------

static const uint8_t PROTO = 1;
static char labels[HALO_CHANNELS][17];
static char cmd[33];
static uint8_t cmd_len = 0;
static bool streaming = false;
static uint16_t rate_hz = 100;
static uint32_t period_us = 10000;
static uint32_t next_us = 0;
static uint16_t seq = 0;
static uint32_t sent = 0;
static volatile uint32_t edge_us = 0;
static volatile bool edge_pending = false;

static void on_edge() {
  // Stamp the edge in the interrupt: the main loop may be busy on I2C for a few ms.
  if (!edge_pending) {
    edge_us = micros();
    edge_pending = true;
  }
}

static void write_reg(uint8_t reg, uint16_t value) {
  Wire.beginTransmission(HALO_I2C_ADDR);
  Wire.write(reg);
  Wire.write((uint8_t)(value >> 8));
  Wire.write((uint8_t)(value & 0xFF));
  Wire.endTransmission();
}

static int16_t read_reg(uint8_t reg) {
  Wire.beginTransmission(HALO_I2C_ADDR);
  Wire.write(reg);
  Wire.endTransmission(false);
  Wire.requestFrom((uint8_t)HALO_I2C_ADDR, (uint8_t)2);
  uint16_t hi = Wire.read();
  uint16_t lo = Wire.read();
  return (int16_t)((hi << 8) | lo);
}

static void sample(uint8_t ch, long *mv, long *ua) {
#if HALO_CHIP_INA3221
  int16_t shunt = read_reg(1 + 2 * ch);      // bits 15..3, 40 uV LSB, two's complement
  int16_t bus = read_reg(2 + 2 * ch);        // bits 15..3, 8 mV LSB
  int32_t shunt_uv = (int32_t)(shunt >> 3) * 40;
  int32_t bus_mv = (int32_t)(bus >> 3) * 8;
#else
  int16_t shunt = read_reg(1);               // 10 uV LSB, signed
  uint16_t bus = (uint16_t)read_reg(2);      // bits 15..3, 4 mV LSB
  int32_t shunt_uv = (int32_t)shunt * 10;
  int32_t bus_mv = (int32_t)(bus >> 3) * 4;
#endif
  *ua = (long)((int64_t)shunt_uv * 1000000LL / (int64_t)SHUNT_UOHM[ch]);
  *mv = (long)bus_mv;
}

static void send_framed(const char *body) {
  uint8_t x = 0;
  for (const char *p = body; *p; ++p) x ^= (uint8_t)*p;
  static const char hex[] = "0123456789ABCDEF";
  Serial.print(body);
  Serial.print('*');
  Serial.print(hex[x >> 4]);
  Serial.print(hex[x & 0x0F]);
  Serial.print("\r\n");
  seq++;  // uint16_t: wraps at 65536 as the protocol says
  sent++;
}

static void send_sample(uint8_t ch) {
  long mv, ua;
  sample(ch, &mv, &ua);
  char body[64];
  snprintf(body, sizeof body, "P,%u,%lu,%u,%ld,%ld", (unsigned)seq, (unsigned long)micros(),
           (unsigned)(ch + 1), mv, ua);
  send_framed(body);
}

static void send_event(uint32_t at_us, const char *source, long id) {
  char body[64];
  snprintf(body, sizeof body, "E,%u,%lu,%s,%ld", (unsigned)seq, (unsigned long)at_us, source, id);
  send_framed(body);
}

static void reply(const char *line) {
  Serial.print(line);
  Serial.print("\r\n");
}

static void ready() { reply("m-ready"); }

static void handle(char *line) {
  char *tok = strtok(line, " ");
  char buf[160];
  if (tok == NULL) {
    reply("e-[Unknown command: ]");
  } else if (!strcmp(tok, "name")) {
    snprintf(buf, sizeof buf, "m-name-inameter-[%s]", HALO_NAME);
    reply(buf);
  } else if (!strcmp(tok, "info")) {
    snprintf(buf, sizeof buf,
             "m-info-[proto=%u,fw=%s,chip=%s,channels=%u,rate_hz=%u,max_rate_hz=%u,marker_pin=%u]",
             PROTO, HALO_FW, HALO_CHIP_INA3221 ? "ina3221" : "ina219", HALO_CHANNELS, rate_hz,
             HALO_MAX_RATE_HZ, HALO_MARKER_PIN);
    reply(buf);
    for (uint8_t ch = 0; ch < HALO_CHANNELS; ++ch) {
      snprintf(buf, sizeof buf, "m-chan-[%u,%s,%lu]", ch + 1, labels[ch],
               (unsigned long)SHUNT_UOHM[ch]);
      reply(buf);
    }
  } else if (!strcmp(tok, "rate")) {
    char *arg = strtok(NULL, " ");
    long hz = arg ? atol(arg) : 0;
    if (hz < 1 || hz > HALO_MAX_RATE_HZ) {
      snprintf(buf, sizeof buf, "e-[rate must be 1..%u Hz]", HALO_MAX_RATE_HZ);
      reply(buf);
    } else if (streaming) {
      reply("e-[stop the stream before changing the rate]");
    } else {
      rate_hz = (uint16_t)hz;
      period_us = 1000000UL / rate_hz;
      snprintf(buf, sizeof buf, "m-rate-%u", rate_hz);
      reply(buf);
    }
  } else if (!strcmp(tok, "label")) {
    char *ch_s = strtok(NULL, " ");
    char *name = strtok(NULL, " ");
    int ch = ch_s ? atoi(ch_s) : 0;
    if (ch < 1 || ch > HALO_CHANNELS || name == NULL) {
      reply("e-[usage: label <channel> <name>]");
    } else {
      strncpy(labels[ch - 1], name, 16);
      labels[ch - 1][16] = 0;
      snprintf(buf, sizeof buf, "m-chan-[%d,%s,%lu]", ch, labels[ch - 1],
               (unsigned long)SHUNT_UOHM[ch - 1]);
      reply(buf);
    }
  } else if (!strcmp(tok, "start")) {
    uint32_t now = micros();
    if (!streaming) {
      streaming = true;
      next_us = now + period_us;
      edge_pending = false;
    }
    snprintf(buf, sizeof buf, "m-started-%lu", (unsigned long)now);
    reply(buf);
  } else if (!strcmp(tok, "stop")) {
    streaming = false;
    snprintf(buf, sizeof buf, "m-stopped-%lu", (unsigned long)sent);
    reply(buf);
  } else if (!strcmp(tok, "mark")) {
    char *arg = strtok(NULL, " ");
    if (streaming && arg) send_event(micros(), "mark", atol(arg));
    reply("m-marked");
  } else {
    snprintf(buf, sizeof buf, "e-[Unknown command: %s]", tok);
    reply(buf);
  }
  ready();
}

static void poll_serial() {
  while (Serial.available() > 0) {
    char c = (char)Serial.read();
    if (c == '%') {
      cmd[cmd_len] = 0;
      handle(cmd);
      cmd_len = 0;
    } else if (c == '\r' || c == '\n') {
      // ignored: a terminal's line ending must not corrupt the next command
    } else if (cmd_len < sizeof(cmd) - 1) {
      cmd[cmd_len++] = c;
    }
  }
}

void setup() {
  Serial.begin(HALO_BAUD);
  Wire.begin();
  Wire.setClock(400000);
#if HALO_CHIP_INA3221
  write_reg(0x00, 0x7127);  // all channels, AVG 1, 1.1 ms conversions, continuous shunt+bus
#else
  write_reg(0x00, 0x399F);  // 32 V, +-320 mV, 12-bit, continuous shunt+bus
#endif
  for (uint8_t ch = 0; ch < HALO_CHANNELS; ++ch) snprintf(labels[ch], sizeof labels[ch], "CH%u", ch + 1);
  pinMode(HALO_MARKER_PIN, INPUT_PULLUP);  // EEMBC's timestamp line is open-drain, idle high
  attachInterrupt(digitalPinToInterrupt(HALO_MARKER_PIN), on_edge, FALLING);
  char buf[40];
  snprintf(buf, sizeof buf, "m-boot-inameter-proto-%u", PROTO);
  reply(buf);
  ready();
}

void loop() {
  poll_serial();
  if (edge_pending) {
    noInterrupts();
    uint32_t at = edge_us;
    edge_pending = false;
    interrupts();
    if (streaming) send_event(at, "gpio", HALO_MARKER_PIN);
  }
  if (streaming && (int32_t)(micros() - next_us) >= 0) {
    next_us += period_us;
    if ((int32_t)(micros() - next_us) > (int32_t)(10 * period_us)) next_us = micros() + period_us;
    for (uint8_t ch = 0; ch < HALO_CHANNELS; ++ch) send_sample(ch);
  }
}
