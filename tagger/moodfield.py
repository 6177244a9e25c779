"""The beets ``mood`` media field, stored where :mod:`tagger.tags` stores a mood, so
``beet write`` and ``genreml tag`` put it in the same frame of each container."""

from __future__ import annotations

from mediafile import (
    ASFStorageStyle,
    MediaField,
    MediaFile,
    MP3DescStorageStyle,
    MP3StorageStyle,
    MP4StorageStyle,
    StorageStyle,
)

__all__ = ["MoodField"]


class MoodField(MediaField):
    """The ``mood`` media field, stored as :mod:`tagger.tags` stores it.

    ID3v2.4 ``TMOO``; ID3v2.3 (beets' ``id3v23: yes``) has no ``TMOO`` (mutagen drops it on a
    v2.3 save), so ``TXXX:MOOD`` there; the other spelling is removed so no reader keeps a stale
    mood. Vorbis ``MOOD``, MP4 ``----:com.apple.iTunes:MOOD``, ASF ``WM/Mood``.
    """

    def __init__(self) -> None:
        super().__init__(
            MP3StorageStyle("TMOO"),
            MP3DescStorageStyle("MOOD"),
            MP4StorageStyle("----:com.apple.iTunes:MOOD"),
            StorageStyle("MOOD"),
            ASFStorageStyle("WM/Mood"),
        )

    def __set__(self, mediafile: MediaFile, value: str | None) -> None:
        if value is None:
            value = ""
        for style in self.styles(mediafile.mgfile):
            if isinstance(style, MP3StorageStyle):  # TMOO or TXXX:MOOD, by the tag version
                wanted = MP3DescStorageStyle if mediafile.id3v23 else MP3StorageStyle
                if type(style) is not wanted:
                    style.delete(mediafile.mgfile)
                    continue
            style.set(mediafile.mgfile, value)
