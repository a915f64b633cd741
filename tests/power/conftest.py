"""Simulated boards for the power tests, closed after each test (each keeps its files open)."""

from __future__ import annotations

import pytest

from power.simboard import SimBoard


@pytest.fixture
def make_board(tmp_path):
    boards = []

    def make(layout: str, name: str = "", **options) -> SimBoard:
        board = SimBoard(str(tmp_path / (name or layout)), layout, **options).create()
        boards.append(board)
        return board

    yield make
    for board in boards:
        board.close()
