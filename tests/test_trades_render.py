"""How 'meshnode proposal ID' and 'offer edit' print (render.trade_history, render.edited)."""

from __future__ import annotations

from meshnode.cli import render

PID = "ab" * 32


def history(**extra) -> dict:
    moves = [
        {"who": "x", "who_name": "Bob (x7k2q9)", "action": "propose", "you_give": ["Drill"], "you_get": []},
        {"who": "y", "who_name": "you", "action": "counter", "you_give": ["Drill"], "you_get": ["Ladder"]},
        {"who": "x", "who_name": "Bob (x7k2q9)", "action": "accept", "you_give": None, "you_get": None},
    ]
    for m, note in zip(moves, ("just the drill?", "for your ladder", "deal\x1b[2J"), strict=True):
        m |= {"id": "cd" * 32, "note": note, "date": "2026-11-30T10:00:00Z"}
    return {
        "id": PID,
        "state": "accepted",
        "with": "x",
        "with_name": "Bob (x7k2q9)",
        "proposed_by": "them",
        "you_give": ["Drill"],
        "you_get": ["Ladder"],
        "note": "deal",
        "waiting_for": "you",
        "moves": moves,
        "not_counted": [],
    } | extra


def test_history_lists_every_move_in_order_with_its_note_then_the_state():
    text = render.trade_history(history())
    lines = text.splitlines()
    assert lines[0] == f"{render.short_id(PID)}  Bob (x7k2q9) offers Ladder for your Drill"
    assert lines[1] == (
        '  2026-11-30  Bob (x7k2q9) proposed: you give Drill, you get nothing "just the drill?"'
    )
    assert lines[2] == '  2026-11-30  you countered: you give Drill, you get Ladder "for your ladder"'
    assert lines[3].startswith('  2026-11-30  Bob (x7k2q9) accepted "deal') and "\x1b" not in text
    assert lines[4] == "state: accepted, waiting for you" and len(lines) == 5


def test_history_says_why_a_trade_closed_and_which_replies_did_not_count():
    late = history()["moves"][2] | {"why": "the trade was accepted first"}
    text = render.trade_history(
        history(
            state="unavailable", waiting_for=None, closed_because="Drill was withdrawn", not_counted=[late]
        )
    )
    assert "state: unavailable (Drill was withdrawn)" in text
    assert text.splitlines()[-2:][0] == "not counted:"
    assert text.endswith("[not counted: the trade was accepted first]")


def test_edited_names_the_item_and_the_update():
    assert render.edited({"id": "ef" * 32, "updated": PID}) == (
        f"updated {render.short_id(PID)} (update {render.short_id('ef' * 32)})"
    )
