"""
Response formats: compressed bodies (C{/gzip /deflate /brotli}), documents
(C{/html /json /xml /robots.txt /deny /encoding/utf8 /forms/post}) and images
(C{/image} by C{Accept}, C{/image/png|jpeg|webp|svg}).

The documents are this project's own; only their shapes follow httpbin
(C{/json} is its slideshow, which clients test for).
"""

from __future__ import annotations

import gzip as gzipformat
import zlib
from typing import Any

from twisted.web.server import Request

from netplugins.httpbin import images
from netplugins.httpbin.core import requestDict, statusResponse
from netplugins.httpbin.routing import Context, HttpbinError, jsonBody, route, textBody


def _compressed(request: Request, encoding: str, flag: str) -> bytes:
    payload = jsonBody(
        request,
        requestDict(request, "origin", "headers", "method", **{flag: True}),
    )
    if encoding == "gzip":
        data = gzipformat.compress(payload)
    elif encoding == "deflate":
        data = zlib.compress(payload)
    else:
        import brotli

        data = brotli.compress(payload)
    request.setHeader("Content-Encoding", encoding)
    return data


def gzip(context: Context, request: Request) -> bytes:
    """
    C{/gzip}: httpbin's description of the request, gzip-encoded.
    """
    return _compressed(request, "gzip", "gzipped")


def deflate(context: Context, request: Request) -> bytes:
    """
    C{/deflate}: the same, zlib-encoded (HTTP's C{deflate}).
    """
    return _compressed(request, "deflate", "deflated")


def brotliEncoded(context: Context, request: Request) -> bytes:
    """
    C{/brotli}: the same, Brotli-encoded.
    """
    return _compressed(request, "br", "brotli")


SLIDESHOW = {
    "slideshow": {
        "author": "Yours Truly",
        "date": "date of publication",
        "slides": [
            {"title": "Wake up to WonderWidgets!", "type": "all"},
            {
                "items": [
                    "Why <em>WonderWidgets</em> are great",
                    "Who <em>buys</em> WonderWidgets",
                ],
                "title": "Overview",
                "type": "all",
            },
        ],
        "title": "Sample Slide Show",
    }
}


def slideshowJSON(context: Context, request: Request) -> bytes:
    """
    C{/json}: the sample slideshow.
    """
    return jsonBody(request, SLIDESHOW)


def slideshowXML(context: Context, request: Request) -> bytes:
    """
    C{/xml}: the sample slideshow as XML.
    """
    show: Any = SLIDESHOW["slideshow"]
    slides = []
    for slide in show["slides"]:
        items = "".join(
            f"\n        <item>{item}</item>" for item in slide.get("items", [])
        )
        slides.append(
            f'    <slide type="{slide["type"]}">\n'
            f"        <title>{slide['title']}</title>{items}\n    </slide>\n"
        )
    document = (
        (
            '<?xml version="1.0" encoding="us-ascii"?>\n\n'
            "<!--  A SAMPLE set of slides  -->\n\n"
            f'<slideshow\n    title="{show["title"]}"\n    date="{show["date"]}"\n'
            f'    author="{show["author"]}"\n    >\n\n'
            + "\n".join(slides)
            + "\n</slideshow>\n"
        )
        .replace("<em>", "&lt;em&gt;")
        .replace("</em>", "&lt;/em&gt;")
    )
    return textBody(request, document, "application/xml")


HTML = """<!DOCTYPE html>
<html>
  <head><meta charset="utf-8"><title>Moby-Dick</title></head>
  <body>
    <h1>Herman Melville - Moby-Dick</h1>
    <div>
      <p>Call me Ishmael. Some years ago - never mind how long precisely -
      having little or no money in my purse, and nothing particular to
      interest me on shore, I thought I would sail about a little and see
      the watery part of the world. It is a way I have of driving off the
      spleen, and regulating the circulation.</p>
    </div>
  </body>
</html>
"""


def html(context: Context, request: Request) -> bytes:
    """
    C{/html}: a short HTML document (Moby-Dick's opening, public domain).
    """
    return textBody(request, HTML, "text/html; charset=utf-8")


UTF8_SAMPLE = """<h1>Unicode sampler</h1>
<pre>
Greek:      Τὴ γλῶσσα μοῦ ἔδωσαν ἑλληνική
Russian:    Съешь же ещё этих мягких французских булок
Hebrew:     דג סקרן שט בים מאוכזב
Arabic:     صِف خَلقَ خَودِ كَمِثلِ الشَمسِ
Japanese:   いろはにほへと ちりぬるを
Chinese:    我能吞下玻璃而不伤身体
Korean:     다람쥐 헌 쳇바퀴에 타고파
Thai:       เป็นมนุษย์สุดประเสริฐเลิศคุณค่า
Math:       ∀x ∈ S: ⌈x⌉ ≥ ⌊x⌋, ∑ᵢ aᵢ ≤ ∞, √2 ≈ 1.414
Arrows:     ← ↑ → ↓ ↔ ⇒ ⇔
Boxes:      ┌─┬─┐ │ │ │ ├─┼─┤ └─┴─┘
Emoji:      🐍 🔒 🌍
</pre>
"""


def utf8(context: Context, request: Request, which: str) -> bytes:
    """
    C{/encoding/utf8}: text in many scripts, UTF-8 encoded.
    """
    if which != "utf8":
        raise HttpbinError(404, "Not Found")
    return textBody(request, UTF8_SAMPLE, "text/html; charset=utf-8")


ROBOTS = "User-agent: *\nDisallow: /deny\n"

DENIED = r"""
           .-------.
          /  -   -  \
         |   o   o   |
         |     ^     |
          \  .---.  /
           '-------'
     YOU SHOULDN'T BE HERE
"""


def robots(context: Context, request: Request) -> bytes:
    """
    C{/robots.txt}: disallows C{/deny}.
    """
    return textBody(request, ROBOTS, "text/plain")


def deny(context: Context, request: Request) -> bytes:
    """
    C{/deny}: what a robot ignoring C{/robots.txt} finds.
    """
    return textBody(request, DENIED, "text/plain")


FORM = """<!DOCTYPE html>
<html>
  <head><meta charset="utf-8"><title>Order</title></head>
  <body>
    <form method="post" action="/post">
      <p><label>Customer name: <input name="custname"></label></p>
      <p><label>Telephone: <input type="tel" name="custtel"></label></p>
      <p><label>E-mail address: <input type="email" name="custemail"></label></p>
      <fieldset>
        <legend>Size</legend>
        <p><label><input type="radio" name="size" value="small"> Small</label></p>
        <p><label><input type="radio" name="size" value="medium"> Medium</label></p>
        <p><label><input type="radio" name="size" value="large"> Large</label></p>
      </fieldset>
      <fieldset>
        <legend>Toppings</legend>
        <p><label><input type="checkbox" name="topping" value="cheese">
          Cheese</label></p>
        <p><label><input type="checkbox" name="topping" value="onion">
          Onion</label></p>
        <p><label><input type="checkbox" name="topping" value="mushroom">
          Mushroom</label></p>
      </fieldset>
      <p><label>Delivery time: <input type="time" name="delivery"></label></p>
      <p><label>Instructions: <textarea name="comments"></textarea></label></p>
      <p><button>Submit order</button></p>
    </form>
  </body>
</html>
"""


def formsPost(context: Context, request: Request, which: str) -> bytes:
    """
    C{/forms/post}: an HTML form that posts to C{/post}.
    """
    if which != "post":
        raise HttpbinError(404, "Not Found")
    return textBody(request, FORM, "text/html; charset=utf-8")


IMAGES = {
    "png": (images.PNG, "image/png"),
    "jpeg": (images.JPEG, "image/jpeg"),
    "webp": (images.WEBP, "image/webp"),
    "svg": (images.SVG, "image/svg+xml"),
}
# What /image serves for an Accept header, in httpbin's order of preference.
_BY_ACCEPT = [
    ("image/webp", "webp"),
    ("image/svg+xml", "svg"),
    ("image/jpeg", "jpeg"),
    ("image/png", "png"),
    ("image/*", "png"),
]


def image(context: Context, request: Request, kind: str = "") -> bytes:
    """
    C{/image/{kind}}, or C{/image} choosing by C{Accept} (PNG without one,
    406 when nothing fits).
    """
    if not kind:
        accept = request.getHeader("Accept")
        if accept is None:
            kind = "png"
        else:
            accept = accept.lower()
            kind = next((k for media, k in _BY_ACCEPT if media in accept), "")
            if not kind:
                return statusResponse(request, 406)
    if kind not in IMAGES:
        raise HttpbinError(404, "Not Found")
    data, contentType = IMAGES[kind]
    request.setHeader("Content-Type", contentType)
    return data


ROUTES = {
    "gzip": route(gzip),
    "deflate": route(deflate),
    "brotli": route(brotliEncoded),
    "json": route(slideshowJSON),
    "xml": route(slideshowXML),
    "html": route(html),
    "encoding": route(utf8, args=1),
    "robots.txt": route(robots),
    "deny": route(deny),
    "forms": route(formsPost, args=1),
    "image": route(image, args=(0, 1)),
}
