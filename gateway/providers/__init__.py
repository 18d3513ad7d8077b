"""Pure translation between OpenAI's Chat Completions and each upstream's wire format.

One package or module per vendor kind, all behind the interface in `base.py`; the
registry is the only list of kinds. No I/O here: the relay owns the sockets.
Section ids in comments (A9, B6, C7, D5, E10, ...) are those of docs/wire-formats.md.
"""
