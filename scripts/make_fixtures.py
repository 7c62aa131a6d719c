#!/usr/bin/env python3
"""Generate the PDF test fixtures under data/.

Run from the repository root:

    python3 scripts/make_fixtures.py

Standard library only. Every PDF is written by hand (objects, xref table with
exact byte offsets, trailer) so the fixtures are small, reviewable and
reproducible: there are no timestamps, the document /IDs are fixed, and all
"random" data comes from a seeded hash stream, so every run writes the same
bytes (given the same zlib, which compresses the content streams and images).

Good inputs (rendered by the job server tests):
  data/sample.pdf        6 pages: text in the standard Type1 fonts at several
                         sizes, vector paths (fills, strokes, curves, colours,
                         dashes, even-odd fill, clipping, transparency), an
                         embedded 256x256 RGB image XObject, mixed page sizes
                         (A4, US Letter, A5, landscape) and one /Rotate 90 page.
  data/text.pdf          3 A4 pages of dense justified text only.
  data/many-pages.pdf    40 A6 pages, each showing its page number in big text
                         (fan-out and page-range tests).
  data/encrypted.pdf     2 pages, Standard Security Handler RC4 40-bit
                         (/V 1 /R 2), user password "secret", owner "owner".
  data/huge-page.pdf     1 page with a 14400 x 14400 pt MediaBox (PDF maximum).

Bad inputs (error handling tests):
  data/bad/truncated.pdf    sample.pdf cut at half its length.
  data/bad/random.pdf       4 KiB of seeded pseudo-random bytes.
  data/bad/empty.pdf        0 bytes.
  data/bad/not-a-pdf.pdf    a small valid PNG image.
  data/bad/broken-xref.pdf  sample.pdf with every xref offset shifted so it
                            points at the wrong byte (pdfium repairs this by
                            scanning the file and renders it anyway).
"""

import hashlib
import math
import os
import struct
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "data")

# Page sizes in PDF points (1/72 inch).
A4 = (595, 842)
LETTER = (612, 792)
A5 = (420, 595)
A6 = (298, 420)
A4_LANDSCAPE = (842, 595)

# Helvetica glyph widths (AFM, 1/1000 em) for ASCII 32..126, used to centre
# and justify text. Other standard fonts reuse them as an approximation.
_HELV_WIDTHS = [
    278, 278, 355, 556, 556, 889, 667, 191, 333, 333, 389, 584, 278, 333, 278, 278,
    556, 556, 556, 556, 556, 556, 556, 556, 556, 556, 278, 278, 584, 584, 584, 556,
    1015, 667, 667, 722, 722, 667, 611, 778, 722, 278, 500, 667, 556, 833, 722, 778,
    667, 778, 722, 667, 611, 722, 667, 944, 667, 667, 611, 278, 278, 278, 469, 556,
    333, 556, 556, 500, 556, 556, 278, 556, 556, 222, 222, 500, 222, 833, 556, 556,
    556, 556, 333, 500, 278, 556, 500, 722, 500, 500, 500, 334, 260, 334, 584,
]


def text_width(s, size, bold=False):
    w = sum(_HELV_WIDTHS[ord(c) - 32] if 32 <= ord(c) <= 126 else 556 for c in s)
    return w * size / 1000.0 * (1.06 if bold else 1.0)


def pdf_str(s):
    """A PDF literal string for ASCII text."""
    return "(" + s.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)") + ")"


def num(x):
    """Compact, deterministic number formatting for content streams."""
    if isinstance(x, int) or float(x).is_integer():
        return str(int(x))
    return ("%.3f" % x).rstrip("0").rstrip(".")


class HashStream:
    """Deterministic pseudo-random bytes: SHA-256 in counter mode."""

    def __init__(self, seed):
        self.seed = seed.encode() if isinstance(seed, str) else seed
        self.counter = 0
        self.buf = b""

    def bytes(self, n):
        while len(self.buf) < n:
            self.buf += hashlib.sha256(self.seed + struct.pack(">Q", self.counter)).digest()
            self.counter += 1
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def below(self, n):
        return int.from_bytes(self.bytes(4), "big") % n


# --------------------------------------------------------------------------
# RC4 + Standard Security Handler, revision 2 (PDF 1.7 spec section 7.6.3)
# --------------------------------------------------------------------------

PASSWORD_PAD = bytes.fromhex(
    "28BF4E5E4E758A4164004E56FFFA01082E2E00B6D0683E802F0CA9FE6453697A"
)


def rc4(key, data):
    s = list(range(256))
    j = 0
    for i in range(256):
        j = (j + s[i] + key[i % len(key)]) & 0xFF
        s[i], s[j] = s[j], s[i]
    out = bytearray(len(data))
    i = j = 0
    for n, byte in enumerate(data):
        i = (i + 1) & 0xFF
        j = (j + s[i]) & 0xFF
        s[i], s[j] = s[j], s[i]
        out[n] = byte ^ s[(s[i] + s[j]) & 0xFF]
    return bytes(out)


def pad_password(pw):
    return (pw.encode("latin-1") + PASSWORD_PAD)[:32]


class StandardSecurityR2:
    """RC4 40-bit, /V 1 /R 2."""

    KEY_LEN = 5

    def __init__(self, user_pw, owner_pw, doc_id, permissions=-4):
        self.p = permissions
        # Algorithm 3: the /O value.
        okey = hashlib.md5(pad_password(owner_pw)).digest()[: self.KEY_LEN]
        self.o = rc4(okey, pad_password(user_pw))
        # Algorithm 2: the file encryption key.
        h = hashlib.md5()
        h.update(pad_password(user_pw))
        h.update(self.o)
        h.update(struct.pack("<i", self.p))
        h.update(doc_id)
        self.key = h.digest()[: self.KEY_LEN]
        # Algorithm 4: the /U value.
        self.u = rc4(self.key, PASSWORD_PAD)

    def object_key(self, objnum, gen=0):
        # Algorithm 1: per-object key, n + 5 bytes of MD5.
        h = hashlib.md5(self.key + struct.pack("<i", objnum)[:3] + struct.pack("<i", gen)[:2])
        return h.digest()[: min(self.KEY_LEN + 5, 16)]

    def encrypt(self, objnum, data):
        return rc4(self.object_key(objnum), data)

    def dict_body(self):
        return "<< /Filter /Standard /V 1 /R 2 /Length 40 /O <%s> /U <%s> /P %d >>" % (
            self.o.hex().upper(),
            self.u.hex().upper(),
            self.p,
        )


# --------------------------------------------------------------------------
# Minimal PDF writer
# --------------------------------------------------------------------------


class PdfWriter:
    def __init__(self, name, security=None):
        self.objects = {}  # objnum -> ("obj", bytes) | ("stream", dict_str, data)
        self.next_num = 1
        # Fixed document ID derived from the fixture name.
        self.doc_id = hashlib.md5(("jobserver fixture " + name).encode()).digest()
        self.security = security(self.doc_id) if security else None
        self.pages = []
        self.pages_num = self.reserve()
        self.catalog_num = self.add("<< /Type /Catalog /Pages %d 0 R >>" % self.pages_num)
        self.info_num = None
        self.encrypt_num = None
        if self.security:
            self.encrypt_num = self.add(self.security.dict_body())

    def reserve(self):
        n = self.next_num
        self.next_num += 1
        return n

    def add(self, body, n=None):
        n = n or self.reserve()
        self.objects[n] = ("obj", body.encode("latin-1"))
        return n

    def stream(self, dict_entries, data, compress=True):
        if compress:
            data = zlib.compress(data, 9)
            dict_entries = "/Filter /FlateDecode " + dict_entries
        n = self.reserve()
        self.objects[n] = ("stream", dict_entries.strip(), data)
        return n

    def string(self, objnum, s):
        """A text string object value, encrypted with objnum's key if needed."""
        raw = s.encode("latin-1")
        if self.security:
            return "<%s>" % self.security.encrypt(objnum, raw).hex().upper()
        return pdf_str(s)

    def info(self, title):
        n = self.reserve()
        self.add(
            "<< /Title %s /Producer %s >>"
            % (self.string(n, title), self.string(n, "jobserver scripts/make_fixtures.py")),
            n,
        )
        self.info_num = n

    def page(self, size, content, resources, rotate=None):
        content_num = self.stream("", content.encode("latin-1"))
        extra = " /Rotate %d" % rotate if rotate is not None else ""
        n = self.add(
            "<< /Type /Page /Parent %d 0 R /MediaBox [0 0 %s %s] /Resources %s /Contents %d 0 R%s >>"
            % (self.pages_num, num(size[0]), num(size[1]), resources, content_num, extra)
        )
        self.pages.append(n)
        return n

    def serialize(self):
        kids = " ".join("%d 0 R" % p for p in self.pages)
        self.add("<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, len(self.pages)), self.pages_num)

        out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
        offsets = {}
        for n in range(1, self.next_num):
            offsets[n] = len(out)
            entry = self.objects[n]
            out += b"%d 0 obj\n" % n
            if entry[0] == "obj":
                out += entry[1]
            else:
                _, d, data = entry
                if self.security and n != self.encrypt_num:
                    data = self.security.encrypt(n, data)
                d = (d + " " if d else "") + "/Length %d" % len(data)
                out += ("<< %s >>\nstream\n" % d).encode("latin-1")
                out += data
                out += b"\nendstream"
            out += b"\nendobj\n"

        xref_at = len(out)
        out += b"xref\n0 %d\n" % self.next_num
        out += b"0000000000 65535 f \n"
        for n in range(1, self.next_num):
            out += b"%010d 00000 n \n" % offsets[n]
        trailer = "<< /Size %d /Root %d 0 R" % (self.next_num, self.catalog_num)
        if self.info_num:
            trailer += " /Info %d 0 R" % self.info_num
        if self.encrypt_num:
            trailer += " /Encrypt %d 0 R" % self.encrypt_num
        hid = self.doc_id.hex().upper()
        trailer += " /ID [<%s> <%s>] >>" % (hid, hid)
        out += b"trailer\n" + trailer.encode() + b"\nstartxref\n%d\n%%%%EOF\n" % xref_at
        return bytes(out)


# --------------------------------------------------------------------------
# Content stream helpers
# --------------------------------------------------------------------------


class Content:
    def __init__(self):
        self.ops = []

    def __call__(self, *parts):
        self.ops.append(" ".join(p if isinstance(p, str) else num(p) for p in parts))
        return self

    def text(self, font, size, x, y, s, rgb=None):
        color = "%s %s %s rg " % tuple(num(c) for c in rgb) if rgb else ""
        self("BT %s/%s %s Tf %s %s Td %s Tj ET" % (color, font, num(size), num(x), num(y), pdf_str(s)))

    def text_centered(self, font, size, cx, y, s, rgb=None, bold=False):
        self.text(font, size, cx - text_width(s, size, bold) / 2, y, s, rgb)

    def rect(self, x, y, w, h, op="f"):
        self(x, y, w, h, "re", op)

    def circle(self, cx, cy, r, op="f"):
        k = 0.5523 * r
        self(cx + r, cy, "m")
        self(cx + r, cy + k, cx + k, cy + r, cx, cy + r, "c")
        self(cx - k, cy + r, cx - r, cy + k, cx - r, cy, "c")
        self(cx - r, cy - k, cx - k, cy - r, cx, cy - r, "c")
        self(cx + k, cy - r, cx + r, cy - k, cx + r, cy, "c")
        self(op)

    def fill_rgb(self, r, g, b):
        self(r, g, b, "rg")

    def stroke_rgb(self, r, g, b):
        self(r, g, b, "RG")

    def render(self):
        return "\n".join(self.ops) + "\n"


STD_FONTS = {
    "F1": "Helvetica",
    "F2": "Helvetica-Bold",
    "F3": "Times-Roman",
    "F4": "Courier",
    "F5": "Helvetica-Oblique",
}


def add_fonts(pdf, names=("F1", "F2", "F3", "F4", "F5")):
    refs = []
    for key in names:
        n = pdf.add(
            "<< /Type /Font /Subtype /Type1 /BaseFont /%s /Encoding /WinAnsiEncoding >>" % STD_FONTS[key]
        )
        refs.append("/%s %d 0 R" % (key, n))
    return "<< %s >>" % " ".join(refs)


def make_image_rgb(size=256):
    """A recognisable 256x256 RGB test pattern: colour gradients, a checker
    overlay in one quadrant and concentric rings in another."""
    rows = bytearray()
    c = size // 2
    for y in range(size):
        for x in range(size):
            r = x * 255 // (size - 1)
            g = y * 255 // (size - 1)
            b = 255 - (x + y) * 255 // (2 * size - 2)
            if x < c and y < c and ((x // 16) + (y // 16)) % 2 == 0:
                r, g, b = 255 - r, 255 - g, 255 - b  # checker, top-left (image rows top-down)
            if x >= c and y >= c:
                d2 = (x - c - c // 2) ** 2 + (y - c - c // 2) ** 2
                if (int(d2 ** 0.5) // 8) % 2 == 0:
                    r, g, b = 255, 255, 255  # rings, bottom-right
            rows += bytes((r, g, b))
    return bytes(rows)


def add_image(pdf, size=256):
    data = make_image_rgb(size)
    return pdf.stream(
        "/Type /XObject /Subtype /Image /Width %d /Height %d /ColorSpace /DeviceRGB /BitsPerComponent 8"
        % (size, size),
        data,
    )


def footer(c, size, label, page_no, total):
    w, _ = size
    c("0.5 g")
    c.text_centered("F1", 8, w / 2, 18, "jobserver sample - page %d/%d - %s %s x %s pt" % (page_no, total, label, size[0], size[1]))
    c("0 g")


# --------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------


def sample_text(c):
    """Page 1 of sample.pdf: A4, title + text at many sizes and fonts."""
    c.fill_rgb(0.12, 0.30, 0.60)
    c.rect(0, 842 - 120, 595, 120)
    c.text_centered("F2", 48, 595 / 2, 842 - 80, "jobserver sample", rgb=(1, 1, 1), bold=True)
    c("0 g")
    c.text_centered("F1", 16, 595 / 2, 842 - 150, "A hand-written PDF fixture for the render job server")
    y = 842 - 210
    for pt in (36, 28, 24, 18, 14, 12, 10, 8, 6):
        line = "Helvetica %d pt - The quick brown fox" % pt
        if text_width(line, pt) > 495:
            line = "Helvetica %d pt - Quick fox" % pt
        c.text("F1", pt, 50, y, line)
        y -= pt * 1.35 + 6
    y -= 8
    c.text("F2", 14, 50, y, "Helvetica-Bold 14 pt: bold text")
    y -= 22
    c.text("F5", 14, 50, y, "Helvetica-Oblique 14 pt: oblique text")
    y -= 22
    c.text("F3", 14, 50, y, "Times-Roman 14 pt: serif text, 0123456789")
    y -= 22
    c.text("F4", 12, 50, y, "Courier 12 pt: monospace {code} [brackets] (parens)")
    y -= 28
    c.text("F2", 18, 50, y, "Red", rgb=(0.85, 0.1, 0.1))
    c.text("F2", 18, 110, y, "Green", rgb=(0.1, 0.6, 0.2))
    c.text("F2", 18, 190, y, "Blue", rgb=(0.1, 0.2, 0.85))
    c("0 g")
    y -= 30
    # Text render modes: stroke outline and fill+stroke.
    # (Tr is graphics state and outlives ET, hence q/Q.)
    c("q BT /F2 30 Tf 1 Tr 0.8 w 0.6 0.1 0.6 RG 50 %s Td (Outlined text) Tj ET Q" % num(y))
    c("q BT /F2 30 Tf 2 Tr 0.8 w 1 0.8 0 rg 0 0 0 RG 300 %s Td (Fill+stroke) Tj ET Q" % num(y))


def sample_shapes(c):
    """Page 2 of sample.pdf: US Letter, vector shapes."""
    c.text("F2", 24, 50, 740, "Vector shapes")
    # Colour swatches (RGB, gray, CMYK).
    colors = [(1, 0, 0), (1, 0.5, 0), (1, 1, 0), (0, 0.7, 0), (0, 0.7, 0.7), (0, 0, 1), (0.5, 0, 0.7), (1, 0.4, 0.7)]
    for i, (r, g, b) in enumerate(colors):
        c.fill_rgb(r, g, b)
        c.rect(50 + i * 64, 660, 56, 56)
    c("0.5 w 0 G")
    for i in range(8):
        c("%s g" % num(i / 7))
        c.rect(50 + i * 64, 610, 56, 40, "B")
    for i, cmyk in enumerate([(1, 0, 0, 0), (0, 1, 0, 0), (0, 0, 1, 0), (0, 0, 0, 1)]):
        c("%s %s %s %s k" % cmyk)
        c.rect(50 + i * 128, 570, 120, 30)
    c("0 g")
    # Stroked rectangles with increasing line widths.
    c("0 0 0.6 RG")
    for i, lw in enumerate((0.5, 1, 2, 4, 8)):
        c("%s w" % num(lw))
        c.rect(50 + i * 100, 470, 80, 70, "S")
    # Filled + stroked circles.
    c("3 w 0 0 0 RG")
    c.fill_rgb(0.95, 0.75, 0.2)
    c.circle(110, 380, 55, "B")
    c.fill_rgb(0.2, 0.6, 0.9)
    c.circle(240, 380, 40, "f")
    c("2 w 0.8 0 0 RG")
    c.circle(350, 380, 50, "S")
    # Even-odd star.
    c.fill_rgb(0.4, 0.1, 0.6)
    pts = []
    for i in range(5):
        a = math.pi / 2 + i * 4 * math.pi / 5
        pts.append((490 + 60 * math.cos(a), 380 + 60 * math.sin(a)))
    c(pts[0][0], pts[0][1], "m")
    for x, y in pts[1:]:
        c(x, y, "l")
    c("h f*")
    # Bezier sine wave, thick with round caps.
    c("4 w 1 J 1 j 0 0.5 0 RG")
    c(50, 250, "m")
    for i in range(6):
        x0 = 50 + i * 85
        c(x0 + 28, 250 + 60 * (1 if i % 2 == 0 else -1), x0 + 57, 250 + 60 * (1 if i % 2 == 0 else -1), x0 + 85, 250, "c")
    c("S")
    # Dashed lines.
    c("0 J 0 j 1.5 w 0 0 0 RG")
    for i, dash in enumerate(("[6 3] 0 d", "[2 2] 0 d", "[12 4 2 4] 0 d")):
        c(dash)
        c(50, 150 - i * 18, "m", 560, 150 - i * 18, "l", "S")
    c("[] 0 d")
    # Triangle fill+stroke with miter join.
    c("6 w 0 j 0.1 0.1 0.1 RG")
    c.fill_rgb(0.9, 0.3, 0.3)
    c(450, 60, "m", 560, 60, "l", 505, 110, "l", "h B")
    c("1 w 0 g 0 G")


def sample_image(c):
    """Page 3 of sample.pdf: A5, the raster image at several scales."""
    c.text("F2", 18, 30, 555, "Embedded RGB image (256 x 256)")
    c("q 360 0 0 360 30 170 cm /Im1 Do Q")
    c("0.5 w 0 G")
    c.rect(30, 170, 360, 360, "S")
    c("q 96 0 0 96 30 50 cm /Im1 Do Q")
    c("q 48 0 0 48 140 50 cm /Im1 Do Q")
    c("q 24 0 0 24 200 50 cm /Im1 Do Q")
    c.text("F1", 9, 30, 155, "Scaled to 360 pt (top), 96 / 48 / 24 pt (below).")


def sample_landscape(c):
    """Page 4 of sample.pdf: A4 landscape, bar chart + text columns."""
    c.text("F2", 24, 40, 545, "Landscape page (842 x 595)")
    c("1 w 0 G")
    c(60, 480, "m", 60, 100, "l", 470, 100, "l", "S")
    values = [120, 260, 180, 340, 90, 300, 220]
    for i, v in enumerate(values):
        c.fill_rgb(0.2 + 0.1 * i, 0.5, 0.9 - 0.1 * i)
        c.rect(80 + i * 55, 100, 40, v)
        c("0 g")
        c.text("F1", 10, 88 + i * 55, 85, "Q%d" % (i + 1))
        c.text("F1", 9, 86 + i * 55, 104 + v, str(v))
    c("0 g")
    for j in range(0, 400, 100):
        c("0.8 G 0.5 w")
        c(60, 100 + j, "m", 470, 100 + j, "l", "S")
    c("0 G 1 w")
    words = lorem_words(HashStream("landscape"), 260)
    lines = wrap(words, 11, 360)  # Helvetica metrics; Times is ~10% narrower
    y = 470
    for line in lines[:30]:
        c.text("F3", 11, 500, y, " ".join(line))
        y -= 13.5


def sample_rotated(c):
    """Page 5 of sample.pdf: A4 portrait with /Rotate 90 (displayed landscape, clockwise)."""
    c.fill_rgb(0.9, 0.2, 0.2)
    # Arrow pointing to the top of the unrotated page.
    c(297, 780, "m", 237, 680, "l", 272, 680, "l", 272, 520, "l", 322, 520, "l", 322, 680, "l", 357, 680, "l", "h f")
    c("0 g")
    c.text_centered("F2", 40, 297, 440, "/Rotate 90", bold=True)
    c.text_centered("F1", 16, 297, 400, "The red arrow points at the top of the", )
    c.text_centered("F1", 16, 297, 380, "unrotated page; rendered, it points right.")
    c.text_centered("F1", 12, 297, 340, "MediaBox is A4 portrait 595 x 842; the page displays 842 x 595.")
    c("2 w 0 0 0.7 RG")
    c.rect(30, 30, 535, 782, "S")
    c("1 w 0 G")


def sample_mixed(c):
    """Page 6 of sample.pdf: US Letter, mixed: image with transform, clipping, transparency."""
    c.text("F2", 24, 50, 740, "Mixed content")
    # Image rotated 15 degrees.
    cs, sn = math.cos(math.radians(15)), math.sin(math.radians(15))
    c("q", 200 * cs, 200 * sn, -200 * sn, 200 * cs, 120, 470, "cm /Im1 Do Q")
    # Image clipped to a circle.
    c("q")
    c.circle(450, 560, 90, "W n")
    c("q 200 0 0 200 350 460 cm /Im1 Do Q")
    c("Q")
    c("2 w 0 G")
    c.circle(450, 560, 90, "S")
    # Overlapping semi-transparent circles.
    c("q /GS1 gs")
    for (cx, cy), col in zip([(200, 300), (270, 300), (235, 360)], [(1, 0, 0), (0, 0.8, 0), (0, 0, 1)]):
        c.fill_rgb(*col)
        c.circle(cx, cy, 60, "f")
    c("Q")
    # Text over a shape.
    c.fill_rgb(0.1, 0.1, 0.3)
    c.rect(360, 240, 200, 120)
    c.text("F2", 20, 375, 305, "White on navy", rgb=(1, 1, 1))
    c.text("F1", 11, 375, 280, "text drawn over a filled box", rgb=(1, 1, 0.6))
    c("0 g")
    c.text("F1", 11, 50, 150, "Rotated image (cm), clipping path (W n), ExtGState alpha 0.5 (gs).")


# sample.pdf page by page: (size, footer label, resources, /Rotate, drawing).
SAMPLE_PAGES = [
    (A4, "A4", "text", None, sample_text),
    (LETTER, "US Letter", "text", None, sample_shapes),
    (A5, "A5", "all", None, sample_image),
    (A4_LANDSCAPE, "A4 landscape", "text", None, sample_landscape),
    (A4, "A4 /Rotate 90", "text", 90, sample_rotated),
    (LETTER, "US Letter", "all", None, sample_mixed),
]


def make_sample():
    pdf = PdfWriter("sample.pdf")
    pdf.info("jobserver sample")
    fonts = add_fonts(pdf)
    img = add_image(pdf)
    gs = pdf.add("<< /Type /ExtGState /ca 0.5 /CA 0.5 >>")
    resources = {
        "text": "<< /Font %s >>" % fonts,
        "all": "<< /Font %s /XObject << /Im1 %d 0 R >> /ExtGState << /GS1 %d 0 R >> >>" % (fonts, img, gs),
    }
    for page_no, (size, label, res, rotate, draw) in enumerate(SAMPLE_PAGES, 1):
        c = Content()
        draw(c)
        footer(c, size, label, page_no, len(SAMPLE_PAGES))
        pdf.page(size, c.render(), resources[res], rotate=rotate)
    return pdf.serialize()


LOREM = (
    "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut labore et "
    "dolore magna aliqua enim ad minim veniam quis nostrud exercitation ullamco laboris nisi aliquip ex ea "
    "commodo consequat duis aute irure in reprehenderit voluptate velit esse cillum fugiat nulla pariatur "
    "excepteur sint occaecat cupidatat non proident sunt culpa qui officia deserunt mollit anim id est laborum "
    "render page queue worker bitmap raster pixel stream scale density job server request response"
).split()


def lorem_words(rng, n):
    words = []
    cap = True
    for i in range(n):
        w = LOREM[rng.below(len(LOREM))]
        if cap:
            w = w.capitalize()
            cap = False
        if rng.below(11) == 0 or i == n - 1:
            w += "."
            cap = True
        elif rng.below(9) == 0:
            w += ","
        words.append(w)
    return words


def wrap(words, size, width):
    lines, cur = [], []
    for w in words:
        if cur and text_width(" ".join(cur + [w]), size) > width:
            lines.append(cur)
            cur = []
        cur.append(w)
    if cur:
        lines.append(cur)
    return lines


def make_text():
    pdf = PdfWriter("text.pdf")
    pdf.info("jobserver text sample")
    fonts = add_fonts(pdf, ("F1", "F2"))
    res = "<< /Font %s >>" % fonts
    rng = HashStream("text.pdf")
    size, leading, margin = 10, 13, 56
    width = A4[0] - 2 * margin
    for p in range(3):
        c = Content()
        c.text("F2", 16, margin, 842 - 70, "Dense text, page %d of 3" % (p + 1))
        y = 842 - 100
        para = 0
        while y > 70:
            para += 1
            lines = wrap(lorem_words(rng, 60 + rng.below(80)), size, width)
            c("BT /F1 %d Tf %d TL %d %s Td" % (size, leading, margin, num(y)))
            for i, line in enumerate(lines):
                if y <= 70:
                    break
                s = " ".join(line)
                last = i == len(lines) - 1
                tw = 0 if last or len(line) < 2 else (width - text_width(s, size)) / (len(line) - 1)
                c("%s Tw %s Tj T*" % (num(round(tw, 3)), pdf_str(s)))
                y -= leading
            c("0 Tw ET")
            y -= 8
        c("0.5 g")
        c.text_centered("F1", 8, A4[0] / 2, 30, "text.pdf - page %d/3" % (p + 1))
        c("0 g")
        pdf.page(A4, c.render(), res)
    return pdf.serialize()


def make_many_pages(n=40):
    pdf = PdfWriter("many-pages.pdf")
    pdf.info("jobserver many pages")
    fonts = add_fonts(pdf, ("F1", "F2"))
    res = "<< /Font %s >>" % fonts
    w, h = A6
    for i in range(1, n + 1):
        c = Content()
        # A distinct background tint per page so renders differ by more than text.
        hue = (i - 1) / n
        c.fill_rgb(0.85 + 0.15 * hue, 0.95 - 0.2 * hue, 0.8 + 0.1 * (i % 3))
        c.rect(10, 10, w - 20, h - 20)
        c("0 g")
        c.text_centered("F2", 140, w / 2, h / 2 - 50, str(i), bold=True)
        c.text_centered("F1", 16, w / 2, 40, "page %d of %d" % (i, n))
        c("1 w 0 G")
        c.rect(10, 10, w - 20, h - 20, "S")
        pdf.page(A6, c.render(), res)
    return pdf.serialize()


def make_encrypted():
    pdf = PdfWriter("encrypted.pdf", security=lambda doc_id: StandardSecurityR2("secret", "owner", doc_id))
    pdf.info("jobserver encrypted sample")
    fonts = add_fonts(pdf, ("F1", "F2"))
    res = "<< /Font %s >>" % fonts
    c = Content()
    c.fill_rgb(0.1, 0.5, 0.2)
    c.rect(0, 842 - 110, 595, 110)
    c.text_centered("F2", 40, 595 / 2, 842 - 75, "encrypted sample", rgb=(1, 1, 1), bold=True)
    c("0 g")
    c.text("F1", 16, 60, 600, "RC4 40-bit, Standard Security Handler /V 1 /R 2.")
    c.text("F1", 16, 60, 570, "User password: secret    Owner password: owner")
    c.fill_rgb(0.9, 0.6, 0.1)
    c.circle(297, 350, 120, "f")
    c("0 g")
    c.text_centered("F2", 28, 297, 340, "decrypted OK", bold=True)
    pdf.page(A4, c.render(), res)
    c = Content()
    c.text("F2", 24, 60, 760, "Page 2 of the encrypted document")
    y = 720
    for line in wrap(lorem_words(HashStream("encrypted"), 200), 12, 470):
        c.text("F1", 12, 60, y, " ".join(line))
        y -= 16
    pdf.page(A4, c.render(), res)
    return pdf.serialize()


def make_huge_page():
    pdf = PdfWriter("huge-page.pdf")
    pdf.info("jobserver huge page")
    fonts = add_fonts(pdf, ("F1", "F2"))
    res = "<< /Font %s >>" % fonts
    s = 14400
    c = Content()
    c("40 w 0 0 0.6 RG")
    c.rect(100, 100, s - 200, s - 200, "S")
    c("20 w 0.8 0 0 RG")
    c(100, 100, "m", s - 100, s - 100, "l", "S")
    c(100, s - 100, "m", s - 100, 100, "l", "S")
    c.fill_rgb(0.95, 0.8, 0.2)
    c.circle(s / 2, s / 2, 3000, "f")
    c("0 g")
    c.text_centered("F2", 900, s / 2, s / 2 + 200, "HUGE PAGE", bold=True)
    c.text_centered("F1", 500, s / 2, s / 2 - 700, "14400 x 14400 pt")
    c.text("F1", 12, 150, 150, "bottom-left corner (12 pt text)")
    pdf.page((s, s), c.render(), res)
    return pdf.serialize()


# --------------------------------------------------------------------------
# Bad inputs
# --------------------------------------------------------------------------


def make_png(w=32, h=32):
    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    raw = bytearray()
    for y in range(h):
        raw.append(0)  # filter: none
        for x in range(w):
            raw += bytes((x * 8, y * 8, 128))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(bytes(raw), 9))
        + chunk(b"IEND", b"")
    )


def break_xref(pdf_bytes):
    """Shift every in-use xref offset by 7 bytes so each points mid-line."""
    xref_at = pdf_bytes.rindex(b"\nxref\n") + 1
    head, xref = pdf_bytes[:xref_at], pdf_bytes[xref_at:]
    lines = xref.split(b"\n")
    for i, line in enumerate(lines):
        if len(line) == 19 and line.endswith(b" 00000 n "):
            lines[i] = b"%010d 00000 n " % (int(line[:10]) + 7)
    return head + b"\n".join(lines)


def write(rel, data):
    path = os.path.join(DATA, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    print("%-24s %8d bytes" % (rel, len(data)))


def main():
    sample = make_sample()
    write("sample.pdf", sample)
    write("text.pdf", make_text())
    write("many-pages.pdf", make_many_pages())
    write("encrypted.pdf", make_encrypted())
    write("huge-page.pdf", make_huge_page())
    write("bad/truncated.pdf", sample[: len(sample) // 2])
    write("bad/random.pdf", HashStream("random.pdf").bytes(4096))
    write("bad/empty.pdf", b"")
    write("bad/not-a-pdf.pdf", make_png())
    write("bad/broken-xref.pdf", break_xref(sample))


if __name__ == "__main__":
    main()
