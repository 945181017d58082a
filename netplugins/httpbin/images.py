"""
The images behind C{/image/*}: a small pink face, 32 by 32 pixels, made here
and owing nothing to httpbin's pictures.

The PNG is drawn and encoded at import by L{drawPNG} (stdlib only).  The JPEG
and WebP are the same drawing encoded once with Pillow and embedded, since
the standard library has no encoder for them::

    from PIL import Image, ImageDraw
    im = Image.new("RGB", (32, 32), (255, 255, 255))
    d = ImageDraw.Draw(im)
    d.ellipse((4, 4, 27, 27), fill=(240, 150, 170), outline=(120, 40, 70))
    d.ellipse((10, 12, 13, 15), fill=(40, 20, 30))
    d.ellipse((18, 12, 21, 15), fill=(40, 20, 30))
    d.rectangle((13, 19, 18, 22), fill=(200, 90, 120))
    im.save(out, "JPEG", quality=70)   # and "WEBP", quality=70
"""

from __future__ import annotations

import base64
import struct
import zlib

SIZE = 32
_WHITE = (255, 255, 255)
_PINK = (240, 150, 170)
_EDGE = (120, 40, 70)
_DARK = (40, 20, 30)
_SNOUT = (200, 90, 120)


def _pixel(x: int, y: int) -> tuple[int, int, int]:
    def inside(cx: float, cy: float, r: float) -> bool:
        return (x - cx) ** 2 + (y - cy) ** 2 <= r * r

    if inside(11.5, 13.5, 2) or inside(19.5, 13.5, 2):
        return _DARK
    if 13 <= x <= 18 and 19 <= y <= 22:
        return _SNOUT
    if inside(15.5, 15.5, 11):
        return _PINK
    if inside(15.5, 15.5, 12):
        return _EDGE
    return _WHITE


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack("!I", len(data))
        + kind
        + data
        + struct.pack("!I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def drawPNG(size: int = SIZE) -> bytes:
    """
    The face as an 8-bit RGB PNG (each row with filter type 0).
    """
    rows = b"".join(
        b"\x00" + bytes(c for x in range(size) for c in _pixel(x, y))
        for y in range(size)
    )
    header = struct.pack("!IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(rows, 9))
        + _chunk(b"IEND", b"")
    )


PNG = drawPNG()

JPEG = base64.b64decode(
    "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAoHBwgHBgoICAgLCgoLDhgQDg0NDh0VFhEYIx8lJCIf"
    "IiEmKzcvJik0KSEiMEExNDk7Pj4+JS5ESUM8SDc9Pjv/2wBDAQoLCw4NDhwQEBw7KCIoOzs7Ozs7"
    "Ozs7Ozs7Ozs7Ozs7Ozs7Ozs7Ozs7Ozs7Ozs7Ozs7Ozs7Ozs7Ozs7Ozs7Ozv/wAARCAAgACADASIA"
    "AhEBAxEB/8QAHwAAAQUBAQEBAQEAAAAAAAAAAAECAwQFBgcICQoL/8QAtRAAAgEDAwIEAwUFBAQA"
    "AAF9AQIDAAQRBRIhMUEGE1FhByJxFDKBkaEII0KxwRVS0fAkM2JyggkKFhcYGRolJicoKSo0NTY3"
    "ODk6Q0RFRkdISUpTVFVWV1hZWmNkZWZnaGlqc3R1dnd4eXqDhIWGh4iJipKTlJWWl5iZmqKjpKWm"
    "p6ipqrKztLW2t7i5usLDxMXGx8jJytLT1NXW19jZ2uHi4+Tl5ufo6erx8vP09fb3+Pn6/8QAHwEA"
    "AwEBAQEBAQEBAQAAAAAAAAECAwQFBgcICQoL/8QAtREAAgECBAQDBAcFBAQAAQJ3AAECAxEEBSEx"
    "BhJBUQdhcRMiMoEIFEKRobHBCSMzUvAVYnLRChYkNOEl8RcYGRomJygpKjU2Nzg5OkNERUZHSElK"
    "U1RVVldYWVpjZGVmZ2hpanN0dXZ3eHl6goOEhYaHiImKkpOUlZaXmJmaoqOkpaanqKmqsrO0tba3"
    "uLm6wsPExcbHyMnK0tPU1dbX2Nna4uPk5ebn6Onq8vP09fb3+Pn6/9oADAMBAAIRAxEAPwD2audu"
    "vFq72TTrFroA8TSSiOJx6qRuY89PlAI5BxjJ4tum2WmnIzAXJd5h2eJQAVPflnTjoQGB44PG/wBv"
    "f8VR/Yf2Gf8A1Xmefj5emen93tu/vcY70mzuw9CMo80+p2Vr4tXeqajYtagnmaOUSRIPVidrDnr8"
    "pAHJOM46KvK/7e/4qj+w/sM/+q8zz8fL0z0/u9t397jHeuy8JXTbLvTnZiLYo8I7JEwICjvwyPx0"
    "AKgccATDEUIxjzQ6B4ttW2WmoorEWxdJj2SJgCWPfhkTnoAWJ45HOXs00MIaCPzGLYI2k8fhXotc"
    "7deEl3s+nXzWoJ4hkiEkSD0UDaw56fMQBwBjGBoeGxMYLlmc5ZTTTQlp4/LYNgDaRx+NdH4StW2X"
    "eourAXJRIT2eJQSGHflnfnoQFI45Ja+El3q+o3zXQB5hjiEcTj0YHcx56/MARwRjOeioSsGJxMZr"
    "lgf/2Q=="
)

WEBP = base64.b64decode(
    "UklGRmwBAABXRUJQVlA4IGABAABwCQCdASogACAAPp1InkslpCKhqAgAsBOJagDMRIEaAuwCPAWY"
    "BjAX5njgpdf+A+472cfMHoTf7j+o8IB+kSXtfrcr/LZahi0DaqI+3FfLPwKaDQAA/v7CMT7dg8Qo"
    "HK/3nDWMNJ2PMn+QjgcuPXzK1me67oQZIsveZQEOlDZZrWYMnz/+f2Ei2nya2z+m0sC9I7eTf2mP"
    "wIlfF+da8nfWw3ZIhJdZT6SL8+GzDD5FOnQSNT2S3X6+OL+7NUjtyHq9f/1kbcskKeg6f02lgXpH"
    "cQ22n274pjmnekvhyLfgO8cD9NwxypMVaiel9H29fLW88hrI95Jb8fzIw/rva33pz+9SB9gGFYpd"
    "VXalYU0Akxm1a8+VJiHfB8XWGQJU1jQa8Mz/L9/sB1s5f5/2ZL299HUEB4A3r5Xbemn/C8jMFVHS"
    "b/wUzvXvP/09ADkIoNUoZttwJ6Zv7z0PCJiFAAAA"
)

SVG = b"""<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="100" height="100" viewBox="0 0 32 32">
  <title>np-httpbin</title>
  <circle cx="16" cy="16" r="11.5" fill="#f096aa" stroke="#782846"/>
  <circle cx="12" cy="14" r="2" fill="#28141e"/>
  <circle cx="20" cy="14" r="2" fill="#28141e"/>
  <rect x="13" y="19" width="6" height="4" rx="1" fill="#c85a78"/>
</svg>
"""
