#!/usr/bin/env python3
"""Generate the hostile-PDF corpus under data/hostile/.

Run from anywhere:

    python3 scripts/make_hostile.py                 # needs qpdf on PATH
    python3 scripts/make_hostile.py --install-qpdf  # apt-get installs qpdf first

Python standard library, plus the `qpdf` command line tool for the files
that need it: the four encrypted files (AES-256 and RC4 128-bit) and the
corrupted cross-reference stream. Without qpdf the script stops and says so;
it installs qpdf (Debian package `qpdf`, with apt-get) only when asked with
--install-qpdf. Everything else is written by hand with the PDF writer and
helpers of scripts/make_fixtures.py, which this script imports.

Each file is small (the corpus is about 0.4 MB, so it is committed), but
several are built to cost the renderer far more than their size: the flate
bombs inflate to 1 GiB, the large image to 1.2 GB of pixels. The bombs are
written without compressing a gibibyte: a chunk compressed after a full
flush always compresses to the same bytes, so the zlib stream is one
compressed chunk repeated, a final empty block and the Adler-32 of the whole
(see `deflate_repeated`); that stream is Flate-compressed once more and the
PDF stream names both filters, `[/FlateDecode /FlateDecode]`. The script
checks each bomb by inflating it (streaming, a few seconds).

Output is deterministic (same bytes on every run, given the same zlib and
qpdf) except the two AES-256 files: qpdf draws their salts and file key at
random, so they differ on every run. Nothing reads them byte for byte.

Besides the PDFs it writes data/hostile/manifest.tsv: one line per request
that scripts/hostile.sh sends (file, password, dpi, expected status,
expected pages, the limit or mechanism that answers it, a description).
The expectations were observed with pdfium 8149 (pypdfium2 5.15.2) and the
default limits: PDF_MAX_PAGES 1000, PDF_MAX_PIXELS 40e6, 4 GiB RLIMIT_AS.
"""

import argparse
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as fx  # noqa: E402  (the project's own PDF writer)

ROOT = fx.ROOT
OUT = os.path.join(ROOT, "data", "hostile")

GIB = 1 << 30
PRODUCER = "jobserver scripts/make_hostile.py"


# --------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------


def info(pdf, title):
    n = pdf.reserve()
    pdf.add("<< /Title %s /Producer %s >>" % (fx.pdf_str(title), fx.pdf_str(PRODUCER)), n)
    pdf.info_num = n


def raw_page(pdf, page_dict_entries, content=None):
    """A page whose dictionary is written as given (no MediaBox added), so
    that bad boxes can be written verbatim."""
    entries = "/Type /Page /Parent %d 0 R %s" % (pdf.pages_num, page_dict_entries)
    if content is not None:
        entries += " /Contents %d 0 R" % pdf.stream("", content.encode("latin-1"))
    n = pdf.add("<< %s >>" % entries)
    pdf.pages.append(n)
    return n


def deflate_repeated(chunk, count, level=9):
    """The zlib stream of `chunk * count`, built from one compression of
    `chunk`: a full flush resets the compressor, so every chunk after one
    compresses to the same bytes."""
    c = zlib.compressobj(level)
    first = c.compress(chunk) + c.flush(zlib.Z_FULL_FLUSH)
    again = c.compress(chunk) + c.flush(zlib.Z_FULL_FLUSH)
    assert first[2:] == again, "zlib full flush did not repeat"
    adler = 1
    for _ in range(count):
        adler = zlib.adler32(chunk, adler)
    # A final, empty fixed-Huffman block, then the checksum of all input.
    return first + again * (count - 1) + b"\x03\x00" + struct.pack(">I", adler)


def inflated_size(data):
    """Bytes `data` inflates to, streaming (never holds the output)."""
    d = zlib.decompressobj()
    total = 0
    buf = data
    while buf:
        total += len(d.decompress(buf, 1 << 24))
        buf = d.unconsumed_tail
    total += len(d.flush())
    assert d.eof, "truncated zlib stream"
    return total


def double_flate(chunk, count):
    """(stream data, its dictionary filter entry) for chunk*count, twice
    Flate-compressed; checked by inflating both layers."""
    inner = deflate_repeated(chunk, count)
    outer = zlib.compress(inner, 9)
    assert zlib.decompress(outer) == inner
    got = inflated_size(inner)
    assert got == len(chunk) * count, (got, len(chunk) * count)
    return outer, "/Filter [/FlateDecode /FlateDecode]"


def simple_doc(name, title, pages=1, size=fx.A4):
    """A small, valid, text-only document: the base of the broken and
    encrypted files."""
    pdf = fx.PdfWriter(name)
    info(pdf, title)
    res = "<< /Font %s >>" % fx.add_fonts(pdf, ("F1", "F2"))
    rng = fx.HashStream(name)
    for p in range(1, pages + 1):
        c = fx.Content()
        c.text("F2", 24, 60, size[1] - 80, "%s - page %d of %d" % (title, p, pages))
        y = size[1] - 120
        for line in fx.wrap(fx.lorem_words(rng, 220), 11, size[0] - 120):
            c.text("F1", 11, 60, y, " ".join(line))
            y -= 15
        pdf.page(size, c.render(), res)
    return pdf.serialize()


def need_qpdf(install):
    if shutil.which("qpdf"):
        return
    if not install:
        sys.exit(
            "make_hostile.py: qpdf is not installed. It writes the encrypted files and the\n"
            "corrupted xref stream. Install it (Debian: apt-get install qpdf), or run\n"
            "    python3 scripts/make_hostile.py --install-qpdf\n"
            "to have this script install it with apt-get."
        )
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    print("make_hostile.py: installing the Debian package qpdf with apt-get", flush=True)
    subprocess.run(sudo + ["apt-get", "update", "-qq"], check=True)
    subprocess.run(
        sudo + ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "qpdf"],
        check=True,
        env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"),
    )


def qpdf(src_bytes, args):
    """Runs `qpdf ARGS in.pdf out.pdf` and returns out.pdf's bytes."""
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "in.pdf")
        dst = os.path.join(tmp, "out.pdf")
        with open(src, "wb") as f:
            f.write(src_bytes)
        # --static-id: a fixed /ID, so RC4 output is reproducible.
        r = subprocess.run(["qpdf", "--static-id"] + args + [src, dst], capture_output=True)
        # Exit 3 is "succeeded with warnings".
        if r.returncode not in (0, 3):
            sys.exit("qpdf %s failed: %s" % (" ".join(args), r.stderr.decode(errors="replace")))
        with open(dst, "rb") as f:
            return f.read()


# --------------------------------------------------------------------------
# The corpus
# --------------------------------------------------------------------------

# (file, password, dpi, expected status, expected pages, limit, description)
MANIFEST = []


def expect(name, status, pages, limit, what, password="-", dpi=200):
    MANIFEST.append((name, password, str(dpi), status, str(pages), limit, what))


def structural(files):
    base = simple_doc("base.pdf", "Broken base", pages=3)
    xref_at = base.rindex(b"\nxref\n") + 1

    files["truncated-half.pdf"] = base[: len(base) // 2]
    expect("truncated-half.pdf", "422", "-", "pdfium open (FPDF_ERR_FORMAT)",
           "a valid 3-page document cut at half its length")
    files["truncated-header.pdf"] = base[:15]
    expect("truncated-header.pdf", "422", "-", "pdfium open (FPDF_ERR_FORMAT)",
           "only the `%PDF-1.4` header line and the binary comment (15 bytes)")
    files["truncated-no-xref.pdf"] = base[:xref_at]
    expect("truncated-no-xref.pdf", "422", "-", "pdfium open (FPDF_ERR_FORMAT): no trailer, no /Root",
           "every object intact, cut just before `xref` (no xref table, trailer or startxref)")
    files["broken-xref-shifted.pdf"] = fx.break_xref(base)
    expect("broken-xref-shifted.pdf", "200", 3, "pdfium xref rebuild",
           "every xref offset shifted by +7 bytes (make_fixtures.break_xref)")
    files["broken-xref-startxref.pdf"] = base[: base.rindex(b"startxref\n")] + b"startxref\n999999999\n%%EOF\n"
    expect("broken-xref-startxref.pdf", "200", 3, "pdfium xref rebuild",
           "`startxref` points 1 GB past the end of the file")
    entries_at = base.index(b"0000000000 65535 f", xref_at)
    xref_end = base.index(b"trailer", xref_at)
    garbage = fx.HashStream("broken-xref-garbage").bytes(xref_end - entries_at)
    files["broken-xref-garbage.pdf"] = base[:entries_at] + garbage + base[xref_end:]
    expect("broken-xref-garbage.pdf", "200", 3, "pdfium xref rebuild",
           "the xref entries (after `xref` and the subsection line) overwritten with random bytes")

    # A cross-reference *stream* (qpdf writes one with object streams) whose
    # compressed data is overwritten: the objects inside object streams
    # can only be found through it.
    objstm = qpdf(base, ["--object-streams=generate", "--compress-streams=y"])
    at = objstm.index(b"/Type /XRef")
    data_at = objstm.index(b"stream\n", at) + len(b"stream\n")
    data_end = objstm.index(b"endstream", data_at)
    mid = (data_at + data_end) // 2
    broken = objstm[:mid] + b"\xff" * min(16, data_end - mid) + objstm[mid + 16:]
    files["broken-xref-stream.pdf"] = broken[: len(objstm)]
    expect("broken-xref-stream.pdf", "200", 3, "pdfium xref rebuild (object streams included)",
           "qpdf object streams + xref stream, 16 bytes of the xref stream's Flate data overwritten (qpdf)")

    files["random.pdf"] = fx.HashStream("hostile random").bytes(16384)
    expect("random.pdf", "422", "-", "pdfium open (FPDF_ERR_FORMAT)", "16 KiB of seeded pseudo-random bytes")
    files["random-with-header.pdf"] = b"%PDF-1.7\n" + fx.HashStream("hostile random 2").bytes(16384)
    expect("random-with-header.pdf", "422", "-", "pdfium open (FPDF_ERR_FORMAT)",
           "a `%PDF-1.7` header, then 16 KiB of random bytes")
    files["empty.pdf"] = b""
    expect("empty.pdf", "422", "-", "handler: empty body", "0 bytes")
    files["zeros.pdf"] = bytes(16384)
    expect("zeros.pdf", "422", "-", "pdfium open (FPDF_ERR_FORMAT)", "16 KiB of NUL bytes")
    files["png-renamed.pdf"] = fx.make_png()
    expect("png-renamed.pdf", "422", "-", "pdfium open (FPDF_ERR_FORMAT)", "a valid 32x32 PNG named .pdf (make_fixtures.make_png)")
    return base


def encrypted(files):
    base = simple_doc("encrypted-base.pdf", "Encrypted", pages=2)
    weak = ["--allow-weak-crypto"]
    variants = [
        ("enc-user-aes256.pdf", ["--encrypt", "user", "owner", "256", "--"], "AES-256 (/V 5 /R 6)", True),
        ("enc-user-rc4.pdf", weak + ["--encrypt", "user", "owner", "128", "--use-aes=n", "--"],
         "RC4 128-bit (/V 2 /R 3)", True),
        ("enc-owner-aes256.pdf", ["--encrypt", "", "owner", "256", "--print=none", "--modify=none", "--"],
         "AES-256 (/V 5 /R 6)", False),
        ("enc-owner-rc4.pdf", weak + ["--encrypt", "", "owner", "128", "--use-aes=n", "--print=none",
                                      "--modify=none", "--"], "RC4 128-bit (/V 2 /R 3)", False),
    ]
    for name, args, cipher, user in variants:
        files[name] = qpdf(base, args)
        if user:
            what = "%s, user password `user`, owner `owner` (qpdf)" % cipher
            expect(name, "422", "-", "pdfium open (FPDF_ERR_PASSWORD)", what + "; no password")
            expect(name, "422", "-", "pdfium open (FPDF_ERR_PASSWORD)", what + "; wrong password", password="wrong")
            expect(name, "200", 2, "-", what + "; user password", password="user")
            expect(name, "200", 2, "-", what + "; owner password", password="owner")
        else:
            what = "%s, empty user password, owner `owner`, printing and changes forbidden (qpdf)" % cipher
            expect(name, "200", 2, "- (permissions are not enforced on rendering)", what + "; no password")
            expect(name, "200", 2, "-", what + "; owner password", password="owner")


def sizes(files):
    files["huge-page-14400pt.pdf"] = fx.make_huge_page()
    expect("huge-page-14400pt.pdf", "422", "-", "PDF_MAX_PIXELS",
           "one 14400x14400 pt page (the PDF maximum): 40000x40000 px at 200 dpi")
    expect("huge-page-14400pt.pdf", "200", 1, "PDF_MAX_PIXELS (36M of 40M px)",
           "the same page at 30 dpi: 6000x6000 px, just under the limit", dpi=30)

    # Flate bomb as the page content: 1 GiB of NUL bytes (PDF whitespace).
    pdf = fx.PdfWriter("flate-bomb-content.pdf")
    info(pdf, "Flate bomb: 1 GiB content stream")
    data, filt = double_flate(bytes(1 << 20), GIB >> 20)
    n = pdf.stream(filt, data, compress=False)
    pdf.pages.append(pdf.add("<< /Type /Page /Parent %d 0 R /MediaBox [0 0 595 842] /Resources << >> "
                             "/Contents %d 0 R >>" % (pdf.pages_num, n)))
    files["flate-bomb-content.pdf"] = pdf.serialize()
    expect("flate-bomb-content.pdf", "200", 1, "fits under RLIMIT_AS (PDF_RENDERER_MEMORY_LIMIT_MB)",
           "page content stream of 1 GiB of NUL bytes, twice Flate-compressed")

    # The same at 3 GiB: pdfium's growing decode buffer needs more than the
    # renderer's 4 GiB address space.
    pdf = fx.PdfWriter("flate-bomb-content-3gib.pdf")
    info(pdf, "Flate bomb: 3 GiB content stream")
    data3, _ = double_flate(bytes(1 << 20), 3 * GIB >> 20)
    n = pdf.stream(filt, data3, compress=False)
    pdf.pages.append(pdf.add("<< /Type /Page /Parent %d 0 R /MediaBox [0 0 595 842] /Resources << >> "
                             "/Contents %d 0 R >>" % (pdf.pages_num, n)))
    files["flate-bomb-content-3gib.pdf"] = pdf.serialize()
    # 422 is what it should get; at d2eeb45 it gets 500 (docs/hostile.md, Findings).
    expect("flate-bomb-content-3gib.pdf", "422", "-",
           "PDF_RENDERER_MEMORY_LIMIT_MB (RLIMIT_AS); 500 today, see Findings",
           "page content stream of 3 GiB of NUL bytes, twice Flate-compressed")

    # Flate bomb as an image: a 1000x1000 gray image whose stream inflates
    # to 1 GiB, 1000x more than the image needs.
    pdf = fx.PdfWriter("flate-bomb-image.pdf")
    info(pdf, "Flate bomb: 1 GiB image stream")
    img = pdf.stream("/Type /XObject /Subtype /Image /Width 1000 /Height 1000 /ColorSpace /DeviceGray "
                     "/BitsPerComponent 8 " + filt, data, compress=False)
    pdf.page(fx.A4, "q 500 0 0 500 47 171 cm /Im1 Do Q\n", "<< /XObject << /Im1 %d 0 R >> >>" % img)
    files["flate-bomb-image.pdf"] = pdf.serialize()
    expect("flate-bomb-image.pdf", "200", 1, "pdfium reads only the image's 1 MB",
           "1000x1000 gray image XObject whose stream inflates to 1 GiB, twice Flate-compressed")

    # A 20000x20000 px RGB image: 1.2 GB of pixels in one colour.
    side = 20000
    rows = 100
    chunk = bytes((200, 40, 40)) * side * rows
    data, filt = double_flate(chunk, side // rows)
    pdf = fx.PdfWriter("image-20000px.pdf")
    info(pdf, "A 20000 x 20000 px image")
    img = pdf.stream("/Type /XObject /Subtype /Image /Width %d /Height %d /ColorSpace /DeviceRGB "
                     "/BitsPerComponent 8 %s" % (side, side, filt), data, compress=False)
    c = fx.Content()
    c("q 495 0 0 495 50 250 cm /Im1 Do Q")
    pdf.page(fx.A4, c.render(), "<< /XObject << /Im1 %d 0 R >> >>" % img)
    files["image-20000px.pdf"] = pdf.serialize()
    expect("image-20000px.pdf", "200", 1, "PDF_TIMEOUT_MS / RLIMIT_AS",
           "A4 page drawing one 20000x20000 px RGB image (1.2 GB decoded, one colour), twice Flate-compressed")


def page_counts(files):
    files["pages-250.pdf"] = fx.make_many_pages(250)
    expect("pages-250.pdf", "200", 250, "PDF_MAX_PAGES (250 of 1000)", "250 A6 pages (make_fixtures.make_many_pages)")

    # 1001 small pages sharing one content stream.
    pdf = fx.PdfWriter("pages-1001.pdf")
    info(pdf, "1001 pages")
    res = "<< /Font %s >>" % fx.add_fonts(pdf, ("F1",))
    content = pdf.stream("", b"BT /F1 24 Tf 10 30 Td (page) Tj ET\n")
    for _ in range(1001):
        raw_page(pdf, "/MediaBox [0 0 100 72] /Resources %s /Contents %d 0 R" % (res, content))
    files["pages-1001.pdf"] = pdf.serialize()
    expect("pages-1001.pdf", "422", "-", "PDF_MAX_PAGES", "1001 pages of 100x72 pt sharing one content stream")

    # The page tree claims a million pages but holds one.
    pdf = fx.PdfWriter("page-count-lie.pdf")
    info(pdf, "page count lie")
    raw_page(pdf, "/MediaBox [0 0 595 842] /Resources << >>", "0 0 1 rg 100 100 395 642 re f\n")
    body = pdf.serialize()
    files["page-count-lie.pdf"] = body.replace(b"/Count 1 >>", b"/Count 1000000 >>", 1)
    expect("page-count-lie.pdf", "422", "-", "PDF_MAX_PAGES (pdfium trusts /Count)",
           "root /Pages says `/Count 1000000` but has one kid")

    # A page tree that contains itself.
    pdf = fx.PdfWriter("page-tree-cycle.pdf")
    info(pdf, "page tree cycle")
    raw_page(pdf, "/MediaBox [0 0 595 842] /Resources << >>", "0 1 0 rg 100 100 395 642 re f\n")
    pdf.pages.append(pdf.pages_num)  # Kids [page, <the Pages node itself>]
    files["page-tree-cycle.pdf"] = pdf.serialize()
    expect("page-tree-cycle.pdf", "422", "-", "renderer: page 2 cannot be read",
           "root /Pages lists itself among its /Kids (a cycle), /Count 2")


def media_boxes(files):
    boxes = [
        ("mediabox-zero.pdf", "/MediaBox [0 0 0 0]", "200", 1, "pdfium: empty box -> US Letter",
         "`/MediaBox [0 0 0 0]`"),
        ("mediabox-negative.pdf", "/MediaBox [0 0 -595 -842]", "200", 1, "pdfium normalises the box",
         "`/MediaBox [0 0 -595 -842]`"),
        ("mediabox-inverted.pdf", "/MediaBox [595 842 0 0]", "200", 1, "pdfium normalises the box",
         "`/MediaBox [595 842 0 0]` (corners swapped)"),
        ("mediabox-nan.pdf", "/MediaBox [0 0 NaN Infinity]", "200", 1, "pdfium: non-numbers -> 0 -> US Letter",
         "`/MediaBox [0 0 NaN Infinity]` (bare keywords)"),
        ("mediabox-strings.pdf", "/MediaBox [(0) (0) (nan) (1e999)]", "200", 1,
         "pdfium: non-numbers -> 0 -> US Letter", "`/MediaBox [(0) (0) (nan) (1e999)]` (strings)"),
        ("mediabox-huge.pdf", "/MediaBox [0 0 %s %s]" % ("9" * 40, "9" * 40), "200", 1,
         "pdfium: unreadable number -> US Letter", "`/MediaBox [0 0 9999...9 9999...9]` (40 nines, past f32)"),
        ("mediabox-big.pdf", "/MediaBox [0 0 200000 200000]", "422", "-", "PDF_MAX_PIXELS",
         "`/MediaBox [0 0 200000 200000]` (14x the PDF maximum)"),
        ("mediabox-short.pdf", "/MediaBox [0 0 595]", "200", 1, "pdfium: bad box -> US Letter",
         "`/MediaBox [0 0 595]` (three numbers)"),
        ("mediabox-missing.pdf", "", "200", 1, "pdfium: no box -> US Letter", "no /MediaBox anywhere"),
        ("mediabox-tiny.pdf", "/MediaBox [0 0 0.01 0.01]", "200", 1, "renderer: at least 1x1 px",
         "`/MediaBox [0 0 0.01 0.01]`"),
    ]
    content = "0.2 0.4 0.8 rg 10 10 200 200 re f\n"
    for name, box, status, pages, limit, what in boxes:
        pdf = fx.PdfWriter(name)
        info(pdf, name)
        raw_page(pdf, "%s /Resources << >>" % box, content)
        files[name] = pdf.serialize()
        expect(name, status, pages, limit, what)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--install-qpdf", action="store_true", help="apt-get install qpdf if it is missing")
    args = ap.parse_args()
    need_qpdf(args.install_qpdf)

    files = {}
    structural(files)
    encrypted(files)
    sizes(files)
    page_counts(files)
    media_boxes(files)

    os.makedirs(OUT, exist_ok=True)
    for old in os.listdir(OUT):
        if old.endswith(".pdf") and old not in files:
            os.remove(os.path.join(OUT, old))
    total = 0
    for name in sorted(files):
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(files[name])
        total += len(files[name])
        print("data/hostile/%-28s %8d bytes" % (name, len(files[name])))
    with open(os.path.join(OUT, "manifest.tsv"), "w") as f:
        f.write("# written by scripts/make_hostile.py; read by scripts/hostile.sh\n")
        f.write("# file\tpassword\tdpi\texpect_status\texpect_pages\tlimit\tdescription\n")
        for row in MANIFEST:
            f.write("\t".join(row) + "\n")
    print("%d files, %d bytes; %d requests in data/hostile/manifest.tsv" % (len(files), total, len(MANIFEST)))


if __name__ == "__main__":
    main()
