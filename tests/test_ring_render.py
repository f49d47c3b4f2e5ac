"""How the ring commands print the API's answers (meshnode.cli.ringcmds)."""

from __future__ import annotations

from meshnode.cli import ringcmds

RING_ID = "ab" * 32


def party(name: str, gives: str, to: str, **moves: bool) -> dict:
    done = {"accepted": False, "completed": False, "declined": False, **moves}
    return {"name": name, "gives": "cd" * 32, "gives_title": gives, "to_name": to, **done}


def ring(state: str, waiting: list[str], you_can: list[str]) -> dict:
    return {
        "id": RING_ID,
        "state": state,
        "proposer_name": "you",
        "note": "drill, ladder\u202e, sewing",
        "created": "2026-11-30T17:00:00Z",
        "expires": "2026-12-14T17:00:00Z",
        "closed_because": "",
        "parties": [
            party("you", "Cordless drill", "Carol (q8h2c5)", accepted=True),
            party("Carol (q8h2c5)", "Sewing machine", "Bob (k3d9x2)"),
            party("Bob (k3d9x2)", "Ladder\n", "you", accepted=True),
        ],
        "waiting_for": waiting,
        "you_can": you_can,
    }


def test_a_ring_says_its_state_whose_move_it_is_and_who_gives_what_to_whom():
    text = ringcmds.ring_text(ring("proposed", ["Carol (q8h2c5)"], ["decline"]))
    lines = text.splitlines()
    assert lines[0] == (
        "ring abababababab: proposed, waiting for Carol (q8h2c5) to accept; expires 2026-12-14T17:00:00Z"
    )
    assert "  you give Cordless drill to Carol (q8h2c5)  [accepted]" in lines
    assert "  Carol (q8h2c5) gives Sewing machine to Bob (k3d9x2)  [no move yet]" in lines
    assert "  Bob (k3d9x2) gives Ladder\\n to you  [accepted]" in lines  # escaped, one line
    assert '  "drill, ladder\\u202e, sewing"' in lines
    assert lines[-1] == "you can: decline (meshnode ring ACTION abababababab)"


def test_suggestions_say_how_to_propose_and_when_already_proposed():
    step = {"author_name": "you", "gives_title": "Cordless drill", "to_name": "Carol (q8h2c5)"}
    rows = [
        {"suggestion": "0123456789abcdef", "swarm": "Elm Street", "steps": [step] * 3, "proposed": None},
        {"suggestion": "fedcba9876543210", "swarm": "Elm Street", "steps": [step] * 3, "proposed": RING_ID},
    ]
    text = ringcmds.suggestions(rows)
    assert "0123456789abcdef  Elm Street  3 neighbours" in text
    assert "  you give Cordless drill to Carol (q8h2c5)" in text
    assert "  propose it: meshnode propose-ring 0123456789abcdef" in text
    assert "  already proposed: meshnode ring abababababab" in text
    assert "no rings found" in ringcmds.suggestions([])
    assert "no ring yet" in ringcmds.ring_list([])
