"""Weight files: SOFIE's text format and a binary format that loads fast, both checked on load.

Text (SOFIE's): `tensor_<name> <length>` then the values, tensor after tensor.

Binary (little-endian): "J2SW", u32 format version (1), u32 length + the model name, u64 hash of the
tensor table (names, types and sizes in order), u64 tensor count; then per tensor its raw values and
a u64 checksum of them (seeded by the tensor's position, so swapped blocks fail too). One header
reads both: a text file begins with "tensor_", a binary one with "J2SW".
"""
from __future__ import annotations

import struct

import numpy as np

from ..ir.tensor import ctype
from .kernels import pack_panels, packed_size

FORMATS = ("text", "binary")
MAGIC = b"J2SW"
VERSION = 1

# little-endian storage type of each tensor dtype (bool is one byte, as in the Session)
_STORAGE = {"float32": "<f4", "int8": "i1", "int16": "<i2", "int32": "<i4", "int64": "<i8", "uint8": "u1",
            "uint32": "<u4", "bool": "u1"}

_MASK = (1 << 64) - 1


def format_values(arr: np.ndarray) -> str:
    flat = np.asarray(arr).reshape(-1)
    if flat.dtype.kind == "f":
        flat = flat.astype(np.float64)
        return " ".join(map("{:.9g}".format, flat.tolist()))
    return " ".join(str(int(v)) for v in flat.astype(np.int64).tolist())


def stored_size(t) -> int:
    """Elements of a weight in the weight file and in the Session's memory."""
    return packed_size(*t.packed[:2]) if t.packed else t.size


def stored(t) -> np.ndarray:
    """A weight's values as the generated code reads them: in panels when the C++ preparation
    marked it packed (prepare.py), else as they are."""
    if not t.packed:
        return t.data
    k, n, transposed = t.packed
    b = np.asarray(t.data).reshape((n, k) if transposed else (k, n))
    return pack_panels(b.T if transposed else b)


def table_hash(g) -> int:
    """FNV-1a (64 bit) of `name:type:size;` for every weight, in file order."""
    h = 0xCBF29CE484222325
    for t in g.weights():
        for byte in f"{t.name}:{ctype(t.dtype)}:{stored_size(t)};".encode():
            h = ((h ^ byte) * 0x100000001B3) & _MASK
    return h


def checksum(data: bytes, position: int) -> int:
    """sum of the 8-byte little-endian words w_i * (2i + 1), plus a seed from the tensor's position,
    modulo 2^64: a changed bit or a moved block changes it. Vectorised, as the C++ loop is."""
    pad = (-len(data)) % 8
    words = np.frombuffer(data + b"\0" * pad, dtype="<u8")
    odd = np.arange(words.size, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    with np.errstate(over="ignore"):
        total = int((words * odd).sum(dtype=np.uint64)) if words.size else 0
    return (total + (position + 1) * 0x9E3779B97F4A7C15) & _MASK


def weights_text(g) -> str:
    """The weight file in SOFIE's text format: `tensor_<name> <length>`, then the values."""
    return "".join(f"tensor_{t.name} {stored_size(t)}\n{format_values(stored(t))}\n" for t in g.weights())


def write_weights(g, path, fmt: str = "text") -> None:
    if fmt not in FORMATS:
        raise ValueError(f"weights={fmt!r}: choose one of {', '.join(FORMATS)}")
    if fmt == "text":
        with open(path, "w") as f:
            f.write(weights_text(g))
        return
    weights = g.weights()
    name = g.name.encode()
    with open(path, "wb") as f:
        f.write(MAGIC + struct.pack("<II", VERSION, len(name)) + name + struct.pack("<QQ", table_hash(g), len(weights)))
        for k, t in enumerate(weights):
            data = np.ascontiguousarray(stored(t)).astype(_STORAGE[t.dtype]).tobytes()
            f.write(data)
            f.write(struct.pack("<Q", checksum(data, k)))


# The C++ side, a helper of every header that has weights.
BINARY_READER = """\
// Reads the binary weight format (see jaxpr2sofie/cpp/weights.py) and checks it as it goes.
class BinaryReader {
public:
   BinaryReader(std::istream& f, const std::string& file, const std::string& model, std::uint64_t table,
                std::uint64_t count)
      : f_(f), where_("TMVA_SOFIE_" + model + ": weight file '" + file + "'") {
      const std::uint16_t one = 1;
      if (*reinterpret_cast<const unsigned char*>(&one) != 1)
         fail(": binary weight files are little-endian and this machine is not; use the text format");
      char magic[4];
      std::uint32_t version = 0, len = 0;
      if (!read(magic, 4) || std::memcmp(magic, "J2SW", 4) != 0)
         fail(" is not a jaxpr2sofie weight file");
      if (!read(&version, 4) || version != 1)
         fail(" has format version " + std::to_string(version) + "; this header reads version 1");
      if (!read(&len, 4) || len > 4096)
         fail(" is truncated in its header");
      std::string name(len, '\\0');
      if (!read(&name[0], len))
         fail(" is truncated in its header");
      if (name != model)
         fail(" belongs to model '" + name + "', not " + model);
      std::uint64_t t = 0, n = 0;
      if (!read(&t, 8) || !read(&n, 8))
         fail(" is truncated in its header");
      if (t != table || n != count)
         fail(" lists other tensors than this model has: is it from another version of the model?");
   }
   template <typename T>
   void tensor(const char* name, T* data, std::size_t n) {
      if (!read(data, n * sizeof(T)))
         fail(" is truncated inside tensor_" + std::string(name));
      std::uint64_t want = 0;
      if (!read(&want, 8))
         fail(" is truncated after tensor_" + std::string(name));
      if (checksum(data, n * sizeof(T), position_++) != want)
         fail(": tensor_" + std::string(name) + " is corrupted or out of place (checksum mismatch)");
   }
   void finish() {
      if (f_.peek() != std::char_traits<char>::eof())
         fail(" has data after the last tensor: is it the weight file of another model?");
   }

private:
   bool read(void* p, std::size_t n) {
      f_.read(static_cast<char*>(p), static_cast<std::streamsize>(n));
      return static_cast<std::size_t>(f_.gcount()) == n;
   }
   [[noreturn]] void fail(const std::string& what) const { throw std::runtime_error(where_ + what); }
   static std::uint64_t checksum(const void* p, std::size_t bytes, std::uint64_t position) {
      const unsigned char* b = static_cast<const unsigned char*>(p);
      std::uint64_t h = 0;
      for (std::size_t i = 0; i * 8 < bytes; ++i) {
         std::uint64_t w = 0;
         std::memcpy(&w, b + i * 8, std::min<std::size_t>(8, bytes - i * 8));
         h += w * (2 * static_cast<std::uint64_t>(i) + 1);
      }
      return h + (position + 1) * 0x9E3779B97F4A7C15ull;
   }
   std::istream& f_;
   std::string where_;
   std::uint64_t position_ = 0;
};
"""
