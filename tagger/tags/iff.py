"""A structure check for WAV (RIFF) and AIFF (IFF) files before their tag is written.

mutagen puts the ``id3`` chunk after the last chunk the file *claims* to have. In a truncated
file the sound data chunk claims more bytes than are there, so the new tag would land past
the end of the file and read back as nothing. Such a file is refused up front, saying it is
cut short, rather than failing verification (or parsing) with a puzzling message.
"""

from __future__ import annotations

import os
import struct

__all__ = ["truncation"]

_FORMS = {b"RIFF": ("<", (b"WAVE",)), b"FORM": (">", (b"AIFF", b"AIFC"))}


def truncation(path: str) -> str | None:
    """Why the WAV or AIFF file ``path`` is cut short, or ``None`` (also for other files).

    The header's form size says how long the file must be; data after it (an ID3v1 tag some
    taggers append) is allowed.

    Returns
    -------
    str or None
        E.g. ``"its header says 88244 bytes, the file has 41000"``.
    """
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(12)
    if len(head) < 8 or head[:4] not in _FORMS:
        return None
    order, forms = _FORMS[head[:4]]
    if len(head) == 12 and head[8:12] not in forms:
        return None  # some other RIFF or IFF kind: not ours to judge
    (length,) = struct.unpack(order + "I", head[4:8])
    if 8 + length > size:
        return f"its header says {8 + length} bytes, the file has {size}"
    return None
