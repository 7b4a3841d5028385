"""Content types for static files.

A fixed table for the types that matter on the web (so the answer does not
depend on the host's /etc/mime.types, and modern types are right on every
machine), falling back to the `mimetypes` module for the long tail. Text
types get `; charset=utf-8`. Lookups are memoised per extension.
"""
import mimetypes
import posixpath

DEFAULT_TYPE = "application/octet-stream"

TYPES = {
    # documents and code
    ".html": "text/html", ".htm": "text/html", ".xhtml": "application/xhtml+xml",
    ".css": "text/css",
    ".js": "text/javascript", ".mjs": "text/javascript", ".cjs": "text/javascript",
    ".json": "application/json", ".map": "application/json",
    ".webmanifest": "application/manifest+json",
    ".jsonld": "application/ld+json",
    ".xml": "application/xml", ".xsl": "application/xml", ".rss": "application/rss+xml",
    ".atom": "application/atom+xml",
    ".txt": "text/plain", ".text": "text/plain", ".md": "text/markdown",
    ".csv": "text/csv", ".tsv": "text/tab-separated-values", ".ics": "text/calendar",
    ".vtt": "text/vtt", ".yaml": "application/yaml", ".yml": "application/yaml",
    ".wasm": "application/wasm",
    ".pdf": "application/pdf",
    # images
    ".png": "image/png", ".apng": "image/apng", ".gif": "image/gif",
    ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".jfif": "image/jpeg",
    ".webp": "image/webp", ".avif": "image/avif", ".jxl": "image/jxl",
    ".heic": "image/heic", ".heif": "image/heif",
    ".svg": "image/svg+xml", ".ico": "image/vnd.microsoft.icon", ".bmp": "image/bmp",
    ".tif": "image/tiff", ".tiff": "image/tiff",
    # fonts
    ".woff": "font/woff", ".woff2": "font/woff2", ".ttf": "font/ttf", ".otf": "font/otf",
    ".eot": "application/vnd.ms-fontobject",
    # audio / video
    ".mp3": "audio/mpeg", ".ogg": "audio/ogg", ".oga": "audio/ogg", ".opus": "audio/ogg",
    ".wav": "audio/wav", ".flac": "audio/flac", ".m4a": "audio/mp4", ".aac": "audio/aac",
    ".mp4": "video/mp4", ".m4v": "video/mp4", ".webm": "video/webm", ".ogv": "video/ogg",
    ".mov": "video/quicktime",
    # archives: served as themselves, never with a Content-Encoding
    ".gz": "application/gzip", ".tgz": "application/gzip", ".zip": "application/zip",
    ".bz2": "application/x-bzip2", ".xz": "application/x-xz", ".zst": "application/zstd",
    ".br": "application/octet-stream", ".tar": "application/x-tar",
    ".7z": "application/x-7z-compressed",
    # 3D
    ".glb": "model/gltf-binary", ".gltf": "model/gltf+json",
}

# Types worth compressing (besides text/*): compressed images, fonts in
# woff/woff2 and media are already compressed and are not listed.
_COMPRESSIBLE = frozenset((
    "text/javascript", "application/javascript", "application/json",
    "application/xml", "image/svg+xml", "application/wasm", "application/xhtml+xml",
    "application/yaml", "font/ttf", "font/otf", "application/vnd.ms-fontobject",
    "image/vnd.microsoft.icon", "image/bmp",
))

_by_ext = {}


def _lookup(ext):
    ctype = TYPES.get(ext)
    if ctype is None:
        if not mimetypes.inited:
            mimetypes.init()
        ctype = mimetypes.types_map.get(ext) or mimetypes.common_types.get(ext) or DEFAULT_TYPE
    base = ctype
    if ctype.startswith("text/"):
        ctype += "; charset=utf-8"
    return ctype, compressible(base)


def compressible(base_type):
    """Is a response of this type (without parameters) worth gzipping?"""
    return (base_type.startswith("text/") or base_type in _COMPRESSIBLE
            or base_type.endswith("+json") or base_type.endswith("+xml"))


def guess(path):
    """(Content-Type header value, compressible) for a file name."""
    ext = posixpath.splitext(path)[1].lower()
    r = _by_ext.get(ext)
    if r is None:
        r = _lookup(ext) if ext else (DEFAULT_TYPE, False)
        if len(_by_ext) < 1024:   # odd extensions must not grow this forever
            _by_ext[ext] = r
    return r


def content_type(path):
    return guess(path)[0]
