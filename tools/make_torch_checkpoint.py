#!/usr/bin/env python3
"""Write PyTorch ``torch.save`` checkpoints without PyTorch (Python stdlib only).

Converts a safetensors file into the zip-based ``.pth`` format that
``torch.save(state_dict, path)`` writes (PyTorch >= 1.6, the default
``_use_new_zipfile_serialization=True``), so that ``ceusd model import`` and
candle's ``candle_core::pickle`` reader can be tested against realistic
checkpoints on machines where PyTorch cannot be installed.  Only ``zipfile``,
``zlib``, ``pickle``, ``struct``, ``json`` and friends are used: no numpy, no torch.

The format
----------
A ``torch.save`` file is a zip archive whose entries all live in one top-level
folder, the *archive name* (``basename(path)`` without its extension, e.g.
``model`` for ``model.pth``; ``archive`` when saving to a file object)::

    model/data.pkl                 pickle (protocol 2) of the saved object
    model/byteorder                b"little"
    model/data/0, data/1, ...      raw storage bytes, one entry per storage
    model/version                  b"3\\n"
    model/.data/serialization_id   40 ASCII digits

Records are written in exactly that order; storages in ``sorted()`` order of
their keys, which are strings, so ``data/10`` precedes ``data/2``.

Zip layout (caffe2/serialize/inline_container.cc, ``PyTorchStreamWriter`` on
top of miniz with ``MZ_ZIP_FLAG_WRITE_ZIP64``):

* every entry is *stored* (method 0), general-purpose flags ``0x0808`` (UTF-8
  names + data descriptor), version-needed 0, DOS time and date 0;
* the local header carries CRC and sizes 0; a data descriptor
  ``PK\\x07\\x08 crc32 size size`` follows the data;
* every local header has one extra field, id ``b"FB"``, filled with ``b"Z"``,
  sized so that the record's data starts at a multiple of 64 bytes
  (``detail::getPadding``, ``kFieldAlignment = 64``); the central directory
  entries carry no extra field;
* the archive ends with a Zip64 end-of-central-directory record (made-by
  0x031e, needed 0x2d), a Zip64 locator, then the classic end record.

The pickle (torch/serialization.py ``_save``, torch/_tensor.py
``_reduce_ex_internal``), protocol 2, produced by a ``pickle.Pickler``
subclass with a ``persistent_id`` method:

* a state dict is a ``collections.OrderedDict`` (``GLOBAL collections
  OrderedDict``, ``EMPTY_TUPLE``, ``REDUCE``, then ``SETITEM(S)``);
* each tensor reduces to ``torch._utils._rebuild_tensor_v2(storage,
  storage_offset, size, stride, requires_grad=False,
  backward_hooks=OrderedDict())``, sizes and strides as tuples of ints;
* each storage is a persistent id ``('storage', torch.FloatStorage, '<key>',
  'cpu', numel)`` (``BINPERSID``); the storage class is pickled as ``GLOBAL
  torch FloatStorage`` (``LongStorage`` for int64, ``HalfStorage`` for float16,
  ``BFloat16Storage`` for bfloat16); keys are ``'0'``, ``'1'``, ... in the order
  the pickler first meets the storages;
* with ``--metadata`` the OrderedDict also carries the ``_metadata``
  attribute that ``nn.Module.state_dict()`` attaches: it is pickled as a
  ``BUILD`` with state ``{'_metadata': OrderedDict(prefix -> {'version': N})}``.

The pickled globals are produced by installing stub modules ``torch`` and
``torch._utils`` in ``sys.modules`` while pickling (removed afterwards), so the
stdlib pickler emits exactly the ``GLOBAL`` opcodes and memo (``BINPUT`` /
``BINGET``) pattern that torch's own pickler emits.

Sources of truth
----------------
* pytorch ``torch/serialization.py`` (``_save``: persistent id tuple, record
  order, ``sorted(serialized_storages.keys())``, ``DEFAULT_PROTOCOL = 2``);
* pytorch ``torch/_tensor.py`` and ``torch/_utils.py`` (``_rebuild_tensor_v2``
  argument list);
* pytorch ``caffe2/serialize/inline_container.cc`` (zip records, 64-byte
  alignment padding, ``version`` and ``serialization_id`` records);
* candle-core ``src/pickle.rs`` (the reader this tool targets) and the real
  ``torch.save`` outputs it ships as test data (``tests/test.pt``,
  ``tests/test_with_key.pt``, ``tests/fortran_tensor_3d.pth``): ``--self-test``
  rebuilds those three files and checks they come out byte-identical.

Known differences from a real ``torch.save``
--------------------------------------------
The first 20 digits of ``.data/serialization_id`` are a combined
``std::hash`` of the record names, iterated from an ``unordered_set``, so the
value depends on the C++ standard library torch was built with (the reference
files above disagree among themselves for identical record names).  This tool
computes a stand-in (libstdc++'s murmur hash over the names in write order).
The last 20 digits (a ``hash_combine`` of the records' CRC-32s) are reproduced
exactly.  No reader (torch.load, candle) checks the id.  Entries of 4 GiB or
more (which need Zip64 extra fields) are not supported.

Usage
-----
    # plain state dict, float32 (F16 / BF16 inputs are widened to float32)
    python3 tools/make_torch_checkpoint.py weights.safetensors --out /tmp/model.pth

    # as saved from nn.DataParallel, inside a training checkpoint
    # {'state_dict': ..., 'epoch': 3, 'best_auc': 0.97}, with renamed heads,
    # BatchNorm num_batches_tracked buffers and nn.Module _metadata
    python3 tools/make_torch_checkpoint.py weights.safetensors --out /tmp/ckpt.pth \\
        --prefix module. --nest state_dict --rename fc1.=fc.0. --rename fc2.=fc.2. \\
        --add-num-batches-tracked --metadata

    # read a checkpoint back (stdlib unpickler with stub globals) as JSON
    python3 tools/make_torch_checkpoint.py --inspect /tmp/ckpt.pth --key state_dict

    # build a tiny safetensors file, convert it every way, read it back and check
    python3 tools/make_torch_checkpoint.py --self-test

Options apply in this order: dtype conversion, ``--rename`` (each OLD=NEW in
the order given, replacing a leading OLD), ``--prefix``, then
``--add-num-batches-tracked`` (an int64 0-dim tensor ``<bn>.num_batches_tracked``
placed after ``<bn>.running_var``, as BatchNorm's state dict orders it, for
every key ending in ``running_mean`` that has none yet).  Tensors keep the
order of the safetensors header.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import glob
import io
import json
import os
import pickle
import pickletools
import struct
import sys
import tempfile
import types
import zipfile
import zlib

# --------------------------------------------------------------------------
# dtypes

# dtype name -> (torch storage class, item size, struct format char)
DTYPES = {
    "float32": ("FloatStorage", 4, "f"),
    "float64": ("DoubleStorage", 8, "d"),
    "float16": ("HalfStorage", 2, "e"),
    "bfloat16": ("BFloat16Storage", 2, None),
    "int64": ("LongStorage", 8, "q"),
    "uint8": ("ByteStorage", 1, "B"),
}
STORAGE_TO_DTYPE = {v[0]: k for k, v in DTYPES.items()}

# safetensors dtype -> dtype name (the subset this tool accepts)
SAFETENSORS_DTYPES = {
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "I64": "int64",
}

# Opcodes that candle-core 0.11's pickle reader understands (pickle.rs, OpCode).
CANDLE_OPCODES = {
    "PROTO", "GLOBAL", "BINPUT", "LONG_BINPUT", "EMPTY_TUPLE", "REDUCE", "MARK",
    "BINUNICODE", "BININT", "TUPLE", "BINPERSID", "BININT1", "BININT2", "TUPLE1",
    "TUPLE2", "TUPLE3", "NEWTRUE", "NEWFALSE", "NONE", "BINGET", "LONG_BINGET",
    "SETITEM", "SETITEMS", "EMPTY_DICT", "DICT", "BUILD", "STOP", "NEWOBJ",
    "EMPTY_LIST", "BINFLOAT", "APPEND", "APPENDS", "LONG1",
}

_CHUNK = 1 << 20  # elements per conversion chunk


def f16_to_f32(data: bytes) -> bytes:
    """Little-endian IEEE half -> little-endian float32 (exact)."""
    out = bytearray()
    for start in range(0, len(data), 2 * _CHUNK):
        part = data[start:start + 2 * _CHUNK]
        n = len(part) // 2
        out += struct.pack("<%df" % n, *struct.unpack("<%de" % n, part))
    return bytes(out)


def bf16_to_f32(data: bytes) -> bytes:
    """Little-endian bfloat16 -> little-endian float32 (exact: the upper half)."""
    out = bytearray(2 * len(data))
    out[2::4] = data[0::2]
    out[3::4] = data[1::2]
    return bytes(out)


# --------------------------------------------------------------------------
# in-memory tensors


class Storage:
    """A flat typed buffer, what torch calls a (typed) storage."""

    def __init__(self, dtype: str, data: bytes):
        if dtype not in DTYPES:
            raise ValueError("unsupported dtype %r" % dtype)
        itemsize = DTYPES[dtype][1]
        if len(data) % itemsize:
            raise ValueError("%d bytes is not a whole number of %s" % (len(data), dtype))
        self.dtype = dtype
        self.data = bytes(data)
        self.numel = len(data) // itemsize

    @property
    def storage_class(self) -> str:
        return DTYPES[self.dtype][0]


def contiguous_strides(shape) -> tuple:
    strides, acc = [], 1
    for dim in reversed(shape):
        strides.append(acc)
        acc *= dim
    return tuple(reversed(strides))


class Tensor:
    """A view on a Storage; pickles like a CPU ``torch.Tensor``."""

    def __init__(self, storage: Storage, shape, stride=None, offset: int = 0):
        self.storage = storage
        self.shape = tuple(int(d) for d in shape)
        self.stride = tuple(stride) if stride is not None else contiguous_strides(self.shape)
        self.offset = int(offset)

    @classmethod
    def from_bytes(cls, dtype: str, shape, data: bytes) -> "Tensor":
        t = cls(Storage(dtype, data), shape)
        numel = 1
        for d in t.shape:
            numel *= d
        if numel != t.storage.numel:
            raise ValueError("shape %s needs %d elements, got %d"
                             % (t.shape, numel, t.storage.numel))
        return t

    @property
    def dtype(self) -> str:
        return self.storage.dtype

    def __reduce_ex__(self, protocol):
        # torch/_tensor.py: (torch._utils._rebuild_tensor_v2,
        #   (storage, storage_offset, size, stride, requires_grad, backward_hooks))
        rebuild = sys.modules["torch._utils"]._rebuild_tensor_v2
        return (rebuild, (self.storage, self.offset, tuple(self.shape), tuple(self.stride),
                          False, collections.OrderedDict()))


# --------------------------------------------------------------------------
# pickling with stub torch globals


def _stub_function(module: str, name: str):
    def stub(*args, **kwargs):
        raise RuntimeError("%s.%s is a pickling stub" % (module, name))
    stub.__module__ = module
    stub.__name__ = stub.__qualname__ = name
    return stub


@contextlib.contextmanager
def torch_stub_modules():
    """Temporarily install fake ``torch`` / ``torch._utils`` modules.

    The pickler writes a class or function as ``GLOBAL module name`` after
    checking that ``sys.modules[module].name`` is the very same object, so the
    stubs must be importable under torch's own names while pickling."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")
    for storage_class, _, _ in DTYPES.values():
        setattr(torch, storage_class,
                type(storage_class, (), {"__module__": "torch", "__qualname__": storage_class}))
    utils._rebuild_tensor_v2 = _stub_function("torch._utils", "_rebuild_tensor_v2")
    torch._utils = utils
    names = ("torch", "torch._utils")
    saved = {n: sys.modules[n] for n in names if n in sys.modules}
    sys.modules["torch"] = torch
    sys.modules["torch._utils"] = utils
    try:
        yield torch
    finally:
        for n in names:
            if n in saved:
                sys.modules[n] = saved[n]
            else:
                sys.modules.pop(n, None)


class TorchPickler(pickle.Pickler):
    """``pickle.Pickler`` with torch's ``persistent_id`` for storages."""

    def __init__(self, file, torch_module):
        super().__init__(file, protocol=2)  # torch.serialization.DEFAULT_PROTOCOL
        self._torch = torch_module
        self._id_map = {}
        self.storages = {}  # key -> Storage

    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            key = self._id_map.setdefault(id(obj), str(len(self._id_map)))
            self.storages[key] = obj
            return ("storage", getattr(self._torch, obj.storage_class), key, "cpu", obj.numel)
        return None


def pickle_torch_object(obj):
    """Return (data.pkl bytes, {storage key: Storage})."""
    buf = io.BytesIO()
    with torch_stub_modules() as torch:
        pickler = TorchPickler(buf, torch)
        pickler.dump(obj)
    return buf.getvalue(), pickler.storages


# --------------------------------------------------------------------------
# the zip container (PyTorchStreamWriter + miniz)

_M64 = (1 << 64) - 1
_ALIGN = 64  # caffe2::serialize::kFieldAlignment
_U32_MAX = 0xFFFFFFFF


def hash_combine(seed: int, value: int) -> int:
    """c10::hash_combine on 64-bit size_t."""
    return (seed ^ ((value + 0x9E3779B9 + ((seed << 6) & _M64) + (seed >> 2)) & _M64)) & _M64


def _libstdcxx_string_hash(data: bytes, seed: int = 0xC70F6907) -> int:
    """libstdc++ std::hash<std::string> (std::_Hash_bytes, 64-bit murmur2)."""
    mul = (0xC6A4A793 << 32) + 0x5BD1E995

    def shift_mix(v):
        return v ^ (v >> 47)

    n = len(data)
    h = (seed ^ (n * mul)) & _M64
    end = n & ~7
    for i in range(0, end, 8):
        d = (shift_mix((int.from_bytes(data[i:i + 8], "little") * mul) & _M64) * mul) & _M64
        h = ((h ^ d) * mul) & _M64
    if n & 7:
        h = ((h ^ int.from_bytes(data[end:], "little")) * mul) & _M64
    h = (shift_mix(h) * mul) & _M64
    return shift_mix(h)


def torch_archive_name(path: str) -> str:
    """PyTorchStreamWriter's basename(): last path component minus extension."""
    name = path.replace("\\", "/").rsplit("/", 1)[-1]
    if "." in name:
        name = name[:name.rindex(".")]
    if not name:
        raise ValueError("cannot derive an archive name from %r" % path)
    return name


class TorchZipWriter:
    """Writes records the way PyTorchStreamWriter (miniz) lays them out."""

    def __init__(self, fileobj, archive_name: str):
        self.f = fileobj
        self.prefix = archive_name + "/"
        self.pos = 0
        self.entries = []  # (name bytes, crc, size, local header offset)
        self.names = []
        self.combined_crc = 0

    def _write(self, data: bytes):
        self.f.write(data)
        self.pos += len(data)

    def write_record(self, name: str, data: bytes):
        full = (self.prefix + name).encode("utf-8")
        size = len(data)
        if size >= _U32_MAX or self.pos >= _U32_MAX:
            raise ValueError("records or archives of 4 GiB and more are not supported")
        start = self.pos + 30 + len(full) + 4
        padding = (-start) % _ALIGN
        extra = b"FB" + struct.pack("<H", padding) + b"Z" * padding
        crc = zlib.crc32(data) & 0xFFFFFFFF
        offset = self.pos
        self._write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 0, 0x0808, 0, 0, 0,
                                0, 0, 0, len(full), len(extra)))
        self._write(full)
        self._write(extra)
        assert self.pos % _ALIGN == 0
        self._write(data)
        self._write(struct.pack("<IIII", 0x08074B50, crc, size, size))
        self.entries.append((full, crc, size, offset))
        self.names.append(name)
        self.combined_crc = hash_combine(self.combined_crc, crc)

    def serialization_id(self) -> str:
        name_hash = 0
        for name in self.names:
            name_hash = hash_combine(name_hash, _libstdcxx_string_hash(name.encode("utf-8")))
        return "%020d%020d" % (name_hash, self.combined_crc)

    def finish(self):
        cd_start = self.pos
        for full, crc, size, offset in self.entries:
            self._write(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 0, 0, 0x0808, 0, 0, 0,
                                    crc, size, size, len(full), 0, 0, 0, 0, 0, offset))
            self._write(full)
        cd_size = self.pos - cd_start
        n = len(self.entries)
        zip64_eocd = self.pos
        self._write(struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 0x031E, 0x2D, 0, 0,
                                n, n, cd_size, cd_start))
        self._write(struct.pack("<IIQI", 0x07064B50, 0, zip64_eocd, 1))
        self._write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, n, n, cd_size, cd_start, 0))


def save(obj, path: str, archive_name: str | None = None,
         serialization_id: str | None = None) -> None:
    """Write ``obj`` to ``path`` as ``torch.save(obj, path)`` would.

    ``obj`` may nest dicts, OrderedDicts, lists, tuples, str, int, float, bool,
    None and Tensor objects.  ``serialization_id`` overrides the computed id
    (used to compare against reference files byte for byte)."""
    data_pkl, storages = pickle_torch_object(obj)
    archive = archive_name or torch_archive_name(path)
    with open(path, "wb") as f:
        zw = TorchZipWriter(f, archive)
        zw.write_record("data.pkl", data_pkl)
        zw.write_record("byteorder", b"little")
        for key in sorted(storages):
            zw.write_record("data/" + key, storages[key].data)
        zw.write_record("version", b"3\n")
        sid = serialization_id if serialization_id is not None else zw.serialization_id()
        zw.write_record(".data/serialization_id", sid.encode("ascii"))
        zw.finish()


# --------------------------------------------------------------------------
# safetensors input


def read_safetensors(path: str):
    """Return [(name, dtype name, shape, raw bytes)] in header order."""
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        raise ValueError("%s: too short for safetensors" % path)
    (header_len,) = struct.unpack("<Q", raw[:8])
    if 8 + header_len > len(raw):
        raise ValueError("%s: header length %d past end of file" % (path, header_len))
    header = json.loads(raw[8:8 + header_len].decode("utf-8"),
                        object_pairs_hook=collections.OrderedDict)
    base = 8 + header_len
    out = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        st_dtype = info["dtype"]
        if st_dtype not in SAFETENSORS_DTYPES:
            raise ValueError("%s: tensor %s has dtype %s; supported: %s"
                             % (path, name, st_dtype, ", ".join(SAFETENSORS_DTYPES)))
        dtype = SAFETENSORS_DTYPES[st_dtype]
        begin, end = info["data_offsets"]
        shape = tuple(info["shape"])
        numel = 1
        for d in shape:
            numel *= d
        if end - begin != numel * DTYPES[dtype][1] or base + end > len(raw):
            raise ValueError("%s: tensor %s: bad data_offsets %s for %s %s"
                             % (path, name, info["data_offsets"], st_dtype, list(shape)))
        out.append((name, dtype, shape, raw[base + begin:base + end]))
    return out


def write_safetensors(path: str, tensors) -> None:
    """Write [(name, safetensors dtype, shape, raw bytes)] (for tests)."""
    header = collections.OrderedDict()
    offset = 0
    for name, dtype, shape, data in tensors:
        header[name] = {"dtype": dtype, "shape": list(shape),
                        "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    blob += b" " * ((-len(blob)) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for _, _, _, data in tensors:
            f.write(data)


# --------------------------------------------------------------------------
# building the checkpoint object


def parse_rename(spec: str):
    if "=" not in spec:
        raise argparse.ArgumentTypeError("--rename expects OLD=NEW, got %r" % spec)
    old, new = spec.split("=", 1)
    if not old:
        raise argparse.ArgumentTypeError("--rename: OLD must not be empty")
    return old, new


def module_metadata(names) -> collections.OrderedDict:
    """The ``_metadata`` nn.Module.state_dict() attaches: one entry per module
    prefix (root ''), {'version': module._version}; BatchNorm has version 2.
    Modules are inferred from the tensor names (parameter-less modules such as
    ReLU, which torch also lists, cannot be known)."""
    md = collections.OrderedDict()
    md[""] = {"version": 1}
    bn = {n[:-len(".running_mean")] for n in names if n.endswith(".running_mean")}
    for name in names:
        parts = name.split(".")[:-1]
        for i in range(1, len(parts) + 1):
            prefix = ".".join(parts[:i])
            if prefix not in md:
                md[prefix] = {"version": 2 if prefix in bn else 1}
    return md


def build_state_dict(entries, renames=(), prefix="", keep_dtype=False,
                     add_num_batches_tracked=False, num_batches_tracked=0,
                     metadata=False) -> collections.OrderedDict:
    """entries: [(name, dtype, shape, bytes)] as read_safetensors returns."""
    sd = collections.OrderedDict()
    for name, dtype, shape, data in entries:
        if not keep_dtype:
            if dtype == "float16":
                dtype, data = "float32", f16_to_f32(data)
            elif dtype == "bfloat16":
                dtype, data = "float32", bf16_to_f32(data)
        new = name
        for old, repl in renames:
            if new.startswith(old):
                new = repl + new[len(old):]
        new = prefix + new
        if new in sd:
            raise ValueError("two tensors map to the key %r" % new)
        sd[new] = Tensor.from_bytes(dtype, shape, data)
    if add_num_batches_tracked:
        # BatchNorm's state dict order: weight, bias, running_mean, running_var,
        # num_batches_tracked; insert after running_var (or running_mean).
        anchors = {}
        for name in sd:
            if name.endswith("running_mean"):
                base = name[:-len("running_mean")]
                if base + "num_batches_tracked" not in sd:
                    anchor = base + "running_var" if base + "running_var" in sd else name
                    anchors[anchor] = base + "num_batches_tracked"
        out = collections.OrderedDict()
        for name, t in sd.items():
            out[name] = t
            if name in anchors:
                out[anchors[name]] = _nbt_tensor(num_batches_tracked)
        sd = out
    if metadata:
        sd._metadata = module_metadata(list(sd))
    return sd


def _nbt_tensor(value: int) -> Tensor:
    return Tensor.from_bytes("int64", (), struct.pack("<q", value))


def wrap_checkpoint(state_dict, key: str):
    """A training checkpoint: {key: state_dict, 'epoch': 3, 'best_auc': 0.97}."""
    return {key: state_dict, "epoch": 3, "best_auc": 0.97}


# --------------------------------------------------------------------------
# reading back (stdlib unpickler with stub globals)


class LoadedStorage:
    def __init__(self, storage_class, key, location, numel, data):
        self.storage_class = storage_class
        self.dtype = STORAGE_TO_DTYPE[storage_class]
        self.key = key
        self.location = location
        self.numel = numel
        self.data = data


class LoadedTensor:
    def __init__(self, storage, offset, size, stride, requires_grad, hooks, *extra):
        self.storage = storage
        self.offset = offset
        self.shape = tuple(size)
        self.stride = tuple(stride)
        self.requires_grad = requires_grad
        self.hooks = hooks
        self.extra = extra

    @property
    def dtype(self):
        return self.storage.dtype

    def values(self, limit=None):
        """Elements in row-major order of the view (honours strides/offset)."""
        fmt = DTYPES[self.dtype][2]
        item = DTYPES[self.dtype][1]
        data = self.storage.data
        if fmt is None:  # bfloat16
            data = bf16_to_f32(data)
            fmt = "f"
            item = 4
        numel = 1
        for d in self.shape:
            numel *= d
        if limit is not None:
            numel = min(numel, limit)
        out = []
        for flat in range(numel):
            idx, rem = 0, flat
            for dim, st in zip(reversed(self.shape), reversed(self.stride)):
                idx += (rem % dim) * st
                rem //= dim
            pos = (self.offset + idx) * item
            out.append(struct.unpack_from("<" + fmt, data, pos)[0])
        return out


class _StorageType:
    def __init__(self, name):
        self.name = name


class TorchUnpickler(pickle.Unpickler):
    """Loads data.pkl without torch; only the globals torch.save uses."""

    def __init__(self, file, zf: zipfile.ZipFile, archive: str):
        super().__init__(file)
        self.zf = zf
        self.archive = archive

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return LoadedTensor
        if module == "torch" and name in STORAGE_TO_DTYPE:
            return _StorageType(name)
        raise pickle.UnpicklingError("global %s.%s is not allowed" % (module, name))

    def persistent_load(self, pid):
        kind, storage_type, key, location, numel = pid
        if kind != "storage":
            raise pickle.UnpicklingError("unknown persistent id %r" % (pid,))
        data = self.zf.read("%s/data/%s" % (self.archive, key))
        storage = LoadedStorage(storage_type.name, key, location, numel, data)
        if len(data) != numel * DTYPES[storage.dtype][1]:
            raise pickle.UnpicklingError("storage %s: %d bytes for %d elements"
                                         % (key, len(data), numel))
        return storage


def zip_layout(path: str):
    """[(entry name, data offset, size)] from the local headers, in file order."""
    with open(path, "rb") as f:
        raw = f.read()
    out = []
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            off = info.header_offset
            fn_len, ex_len = struct.unpack_from("<HH", raw, off + 26)
            out.append((info.filename, off + 30 + fn_len + ex_len, info.file_size))
    return out


def load(path: str):
    """Return (object, archive name, data.pkl bytes)."""
    with zipfile.ZipFile(path) as zf:
        pkl = [n for n in zf.namelist() if n.endswith("/data.pkl")]
        if len(pkl) != 1:
            raise ValueError("%s: expected one */data.pkl entry, found %s" % (path, pkl))
        archive = pkl[0][:-len("/data.pkl")]
        data = zf.read(pkl[0])
        obj = TorchUnpickler(io.BytesIO(data), zf, archive).load()
    return obj, archive, data


def describe(path: str, key: str | None = None, nvalues: int = 4) -> dict:
    obj, archive, data = load(path)
    with zipfile.ZipFile(path) as zf:
        bad = zf.testzip()
    layout = zip_layout(path)
    ops = sorted({op.name for op, _, _ in pickletools.genops(data)})
    top = obj
    if key is not None:
        if not isinstance(obj, dict) or key not in obj:
            raise KeyError("key %r not in the top-level object" % key)
        top = obj[key]
    tensors, others = [], {}
    if isinstance(top, dict):
        for name, value in top.items():
            if isinstance(value, LoadedTensor):
                tensors.append({
                    "name": name, "dtype": value.dtype,
                    "storage": value.storage.storage_class, "key": value.storage.key,
                    "location": value.storage.location, "numel": value.storage.numel,
                    "shape": list(value.shape), "stride": list(value.stride),
                    "offset": value.offset, "requires_grad": value.requires_grad,
                    "values": value.values(nvalues),
                })
            else:
                others[str(name)] = repr(value)[:200]
    return {
        "file": path,
        "archive": archive,
        "crc_ok": bad is None,
        "records": [{"name": n, "data_offset": o, "size": s, "aligned64": o % 64 == 0}
                    for n, o, s in layout],
        "pickle_opcodes": ops,
        "candle_unsupported_opcodes": sorted(set(ops) - CANDLE_OPCODES),
        "top_level": type(obj).__name__,
        "top_level_keys": [str(k) for k in obj] if isinstance(obj, dict) else None,
        "metadata": (dict(getattr(top, "_metadata")) if hasattr(top, "_metadata") else None),
        "non_tensor_entries": others,
        "tensors": tensors,
    }


# --------------------------------------------------------------------------
# self-test


def _check(cond, msg):
    if not cond:
        raise AssertionError(msg)


def _reference_files(reference_dir):
    if reference_dir:
        dirs = [reference_dir]
    else:
        dirs = sorted(glob.glob(os.path.expanduser(
            "~/.cargo/registry/src/*/candle-core-*/tests")))
    for d in reversed(dirs):
        if all(os.path.exists(os.path.join(d, f))
               for f in ("test.pt", "test_with_key.pt", "fortran_tensor_3d.pth")):
            return d
    return None


def _reference_roundtrip(ref_dir: str, tmp: str) -> list:
    """Rebuild candle's torch.save reference files byte for byte."""
    report = []
    longs = lambda vals: struct.pack("<%dq" % len(vals), *vals)  # noqa: E731

    od = collections.OrderedDict()
    od["test"] = Tensor.from_bytes("int64", (2, 4), longs(range(1, 9)))
    # fortran order 2x3x4 array of 1..24: element [i,j,k] = 1+12i+4j+k at i+2j+6k
    buf = [0] * 24
    for i in range(2):
        for j in range(3):
            for k in range(4):
                buf[i + 2 * j + 6 * k] = 1 + 12 * i + 4 * j + k
    fortran = Tensor(Storage("int64", longs(buf)), (2, 3, 4), stride=(1, 2, 6))
    cases = [
        ("test.pt", od),
        ("test_with_key.pt", {"model_state_dict": od}),
        ("fortran_tensor_3d.pth", {"tensor_fortran": fortran}),
    ]
    for fname, obj in cases:
        ref = os.path.join(ref_dir, fname)
        with zipfile.ZipFile(ref) as zf:
            sid_name = [n for n in zf.namelist() if n.endswith("/.data/serialization_id")][0]
            ref_sid = zf.read(sid_name).decode("ascii")
        out = os.path.join(tmp, fname)
        save(obj, out)
        # the CRC half of the id is reproduced; the name-hash half is not portable
        with zipfile.ZipFile(out) as zf:
            own_sid = zf.read(sid_name).decode("ascii")
        _check(own_sid[20:] == ref_sid[20:],
               "%s: serialization_id CRC part %s != %s" % (fname, own_sid[20:], ref_sid[20:]))
        save(obj, out, serialization_id=ref_sid)
        with open(ref, "rb") as a, open(out, "rb") as b:
            ref_bytes, own_bytes = a.read(), b.read()
        if ref_bytes != own_bytes:
            first = next((i for i, (a, b) in enumerate(zip(ref_bytes, own_bytes)) if a != b),
                         min(len(ref_bytes), len(own_bytes)))
            raise AssertionError(
                "%s differs from the torch.save reference at byte %d (sizes %d vs %d)"
                % (fname, first, len(ref_bytes), len(own_bytes)))
        report.append("%s: byte-identical to %s (%d bytes)" % (fname, ref, len(own_bytes)))
    return report


def self_test(reference_dir: str | None = None) -> None:
    tmp = tempfile.mkdtemp(prefix="torch_ckpt_selftest_")
    f32 = lambda vals: struct.pack("<%df" % len(vals), *vals)  # noqa: E731
    f16 = lambda vals: struct.pack("<%de" % len(vals), *vals)  # noqa: E731

    def bf16(vals):
        return b"".join(struct.pack("<f", v)[2:] for v in vals)

    conv = [i * 0.25 - 3.0 for i in range(2 * 3 * 2 * 2)]
    fc1 = [0.5, -1.25, 2.0, 0.125, -0.0625, 3.5]  # exact in f16
    fc1_bias = [1.0, -2.5, 0.75]  # exact in bf16
    src = [
        ("conv1.weight", "F32", (2, 3, 2, 2), f32(conv)),
        ("bn1.weight", "F32", (2,), f32([1.0, 1.5])),
        ("bn1.bias", "F16", (2,), f16([0.25, -0.5])),
        ("bn1.running_mean", "F32", (2,), f32([0.1, -0.2])),
        ("bn1.running_var", "F32", (2,), f32([0.9, 1.1])),
        ("fc1.weight", "F16", (3, 2), f16(fc1)),
        ("fc1.bias", "BF16", (3,), bf16(fc1_bias)),
        ("fc2.weight", "F32", (1, 3), f32([0.5, 0.25, -1.0])),
        ("fc2.bias", "F32", (1,), f32([0.0625])),
        ("layer.0.bn.running_mean", "F32", (1,), f32([2.0])),
        ("layer.0.bn.running_var", "F32", (1,), f32([4.0])),
        ("layer.0.scale", "F32", (1, 1, 1, 1), f32([7.0])),
    ]
    expected = {
        "conv1.weight": ((2, 3, 2, 2), conv), "bn1.weight": ((2,), [1.0, 1.5]),
        "bn1.bias": ((2,), [0.25, -0.5]), "bn1.running_mean": ((2,), None),
        "bn1.running_var": ((2,), None), "fc1.weight": ((3, 2), fc1),
        "fc1.bias": ((3,), fc1_bias), "fc2.weight": ((1, 3), [0.5, 0.25, -1.0]),
        "fc2.bias": ((1,), [0.0625]), "layer.0.bn.running_mean": ((1,), [2.0]),
        "layer.0.bn.running_var": ((1,), [4.0]), "layer.0.scale": ((1, 1, 1, 1), [7.0]),
    }
    st_path = os.path.join(tmp, "tiny.safetensors")
    write_safetensors(st_path, src)
    _check([e[0] for e in read_safetensors(st_path)] == [s[0] for s in src],
           "safetensors round trip lost names or order")

    def run(argv):
        _check(main(argv) == 0, "conversion failed: %s" % argv)

    lines = []
    # 1. plain state dict
    plain = os.path.join(tmp, "plain.pth")
    run([st_path, "--out", plain])
    obj, archive, data = load(plain)
    _check(archive == "plain", "archive name %r" % archive)
    _check(type(obj) is collections.OrderedDict, "top level is %s" % type(obj).__name__)
    _check(list(obj) == [s[0] for s in src], "names/order: %s" % list(obj))
    keys = []
    for name, t in obj.items():
        shape, vals = expected[name]
        _check(t.dtype == "float32" and t.storage.storage_class == "FloatStorage",
               "%s: dtype %s" % (name, t.dtype))
        _check(t.shape == shape, "%s: shape %s" % (name, t.shape))
        _check(t.stride == contiguous_strides(shape), "%s: stride %s" % (name, t.stride))
        _check(t.offset == 0 and t.requires_grad is False and t.storage.location == "cpu",
               "%s: offset/requires_grad/location" % name)
        _check(isinstance(t.hooks, collections.OrderedDict) and not t.hooks, "%s: hooks" % name)
        _check(t.storage.numel == len(t.storage.data) // 4, "%s: numel" % name)
        got = t.values()
        if vals is None:
            vals = [struct.unpack("<f", struct.pack("<f", v))[0] for v in
                    {"bn1.running_mean": [0.1, -0.2], "bn1.running_var": [0.9, 1.1]}[name]]
        _check(got == vals, "%s: values %s != %s" % (name, got, vals))
        keys.append(t.storage.key)
    _check(keys == [str(i) for i in range(len(src))], "storage keys %s" % keys)
    layout = zip_layout(plain)
    want = (["plain/data.pkl", "plain/byteorder"]
            + ["plain/data/%s" % k for k in sorted(keys)]
            + ["plain/version", "plain/.data/serialization_id"])
    _check([n for n, _, _ in layout] == want, "record order %s" % [n for n, _, _ in layout])
    _check(all(o % 64 == 0 for _, o, _ in layout), "unaligned record data")
    with zipfile.ZipFile(plain) as zf:
        _check(zf.testzip() is None, "CRC mismatch")
        _check(zf.read("plain/version") == b"3\n", "version record")
        _check(zf.read("plain/byteorder") == b"little", "byteorder record")
        _check(all(i.compress_type == zipfile.ZIP_STORED for i in zf.infolist()), "compressed")
    ops = {op.name for op, _, _ in pickletools.genops(data)}
    _check(ops <= CANDLE_OPCODES, "opcodes candle cannot read: %s" % (ops - CANDLE_OPCODES))
    _check(b"ctorch\nFloatStorage\n" in data and b"ctorch._utils\n_rebuild_tensor_v2\n" in data
           and b"ccollections\nOrderedDict\n" in data, "globals")
    _check(sys.modules.get("torch") is None or hasattr(sys.modules["torch"], "__file__"),
           "stub torch module left in sys.modules")
    lines.append("plain: %d tensors, names/shapes/strides/values/keys/alignment/CRC ok, "
                 "opcodes %s" % (len(obj), sorted(ops)))

    # 2. DataParallel prefix + renames + num_batches_tracked + metadata, nested
    full = os.path.join(tmp, "full.pth")
    run([st_path, "--out", full, "--prefix", "module.", "--nest", "state_dict",
         "--rename", "fc1.=fc.0.", "--rename", "fc2.=fc.2.", "--add-num-batches-tracked",
         "--num-batches-tracked-value", "1234", "--metadata"])
    obj, _, data = load(full)
    _check(type(obj) is dict and list(obj) == ["state_dict", "epoch", "best_auc"],
           "nested top level %r" % list(obj))
    _check(obj["epoch"] == 3 and type(obj["epoch"]) is int, "epoch")
    _check(obj["best_auc"] == 0.97 and type(obj["best_auc"]) is float, "best_auc")
    sd = obj["state_dict"]

    def renamed(n):
        for old, new in (("fc1.", "fc.0."), ("fc2.", "fc.2.")):
            if n.startswith(old):
                n = new + n[len(old):]
        return "module." + n

    want_names = []
    for s in src:
        want_names.append(renamed(s[0]))
        if s[0].endswith("running_var"):
            want_names.append(renamed(s[0][:-len("running_var")] + "num_batches_tracked"))
    _check(list(sd) == want_names, "names %s" % list(sd))
    for name, t in sd.items():
        if name.endswith("num_batches_tracked"):
            _check(t.dtype == "int64" and t.storage.storage_class == "LongStorage"
                   and t.shape == () and t.stride == () and t.storage.numel == 1
                   and t.values() == [1234], "%s: %s %s %s" % (name, t.dtype, t.shape, t.values()))
        else:
            orig = [s[0] for s in src if renamed(s[0]) == name][0]
            _check(t.shape == expected[orig][0], "%s shape" % name)
    md = sd._metadata
    _check(md[""] == {"version": 1} and md["module"] == {"version": 1}
           and md["module.bn1"] == {"version": 2} and md["module.fc.0"] == {"version": 1}
           and md["module.layer.0.bn"] == {"version": 2}, "metadata %r" % md)
    ops = {op.name for op, _, _ in pickletools.genops(data)}
    _check(ops <= CANDLE_OPCODES, "opcodes candle cannot read: %s" % (ops - CANDLE_OPCODES))
    _check("BUILD" in ops and "BINFLOAT" in ops, "expected BUILD (metadata) and BINFLOAT")
    with zipfile.ZipFile(full) as zf:
        names = [n for n in zf.namelist() if "/data/" in n]
        _check(names[:3] == ["full/data/0", "full/data/1", "full/data/10"],
               "storages not in sorted(str) order: %s" % names)
    lines.append("nested/prefix/rename/num_batches_tracked/metadata: %d entries ok" % len(sd))

    # 3. --keep-dtype keeps F16 / BF16 storages
    keep = os.path.join(tmp, "keep.pth")
    run([st_path, "--out", keep, "--keep-dtype"])
    obj, _, _ = load(keep)
    _check(obj["fc1.weight"].storage.storage_class == "HalfStorage"
           and obj["fc1.weight"].values() == fc1, "HalfStorage")
    _check(obj["fc1.bias"].storage.storage_class == "BFloat16Storage"
           and obj["fc1.bias"].values() == fc1_bias, "BFloat16Storage")
    lines.append("--keep-dtype: HalfStorage / BFloat16Storage ok")

    # 4. more than 255 memo entries and large dims (LONG_BINPUT, BININT2, BININT)
    many = [("t%03d.w" % i, "F32", (1,), f32([float(i)])) for i in range(300)]
    many.append(("big", "F32", (70000, 1), f32([0.0] * 70000)))
    many_st = os.path.join(tmp, "many.safetensors")
    write_safetensors(many_st, many)
    many_pth = os.path.join(tmp, "many.pth")
    run([many_st, "--out", many_pth])
    obj, _, data = load(many_pth)
    _check(len(obj) == 301 and obj["t299.w"].values() == [299.0]
           and obj["big"].shape == (70000, 1) and obj["big"].stride == (1, 1), "many")
    ops = {op.name for op, _, _ in pickletools.genops(data)}
    _check(ops <= CANDLE_OPCODES and {"LONG_BINPUT", "BININT"} <= ops, "many: opcodes %s" % ops)
    lines.append("301 tensors: LONG_BINPUT/BININT paths ok")

    ref_dir = _reference_files(reference_dir)
    if ref_dir:
        lines += _reference_roundtrip(ref_dir, tmp)
    else:
        lines.append("torch.save reference files not found; byte comparison skipped")
    for line in lines:
        print("ok  " + line)
    print("self-test passed (scratch files in %s)" % tmp)


# --------------------------------------------------------------------------
# command line


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description="Write a torch.save-compatible .pth from a safetensors file "
                    "(stdlib only), or inspect one.")
    p.add_argument("input", nargs="?", help="safetensors file (F32, F16, BF16, I64 tensors)")
    p.add_argument("--out", help="output .pth path")
    p.add_argument("--prefix", default="", help="prepend to every key (e.g. 'module.')")
    p.add_argument("--nest", metavar="KEY",
                   help="save {KEY: state_dict, 'epoch': 3, 'best_auc': 0.97}")
    p.add_argument("--rename", metavar="OLD=NEW", action="append", type=parse_rename,
                   default=[], help="replace a leading OLD in key names (repeatable)")
    p.add_argument("--add-num-batches-tracked", action="store_true",
                   help="add an int64 0-dim <bn>.num_batches_tracked per running_mean")
    p.add_argument("--num-batches-tracked-value", type=int, default=0, metavar="N",
                   help="value stored in num_batches_tracked (default 0)")
    p.add_argument("--metadata", action="store_true",
                   help="attach nn.Module-style _metadata to the state dict")
    p.add_argument("--keep-dtype", action="store_true",
                   help="keep F16/BF16 as HalfStorage/BFloat16Storage instead of float32")
    p.add_argument("--archive-name",
                   help="zip folder name (default: output file name without extension)")
    p.add_argument("--inspect", metavar="PTH", help="print a JSON description of a .pth")
    p.add_argument("--key", help="with --inspect: describe this top-level entry")
    p.add_argument("--values", type=int, default=4, help="with --inspect: values per tensor")
    p.add_argument("--self-test", action="store_true", help="run the built-in checks")
    p.add_argument("--reference-dir",
                   help="with --self-test: folder holding candle's test.pt, "
                        "test_with_key.pt, fortran_tensor_3d.pth")
    args = p.parse_args(argv)

    if args.self_test:
        self_test(args.reference_dir)
        return 0
    if args.inspect:
        print(json.dumps(describe(args.inspect, args.key, args.values), indent=1))
        return 0
    if not args.input or not args.out:
        p.error("INPUT and --out are required (or use --inspect / --self-test)")
    entries = read_safetensors(args.input)
    sd = build_state_dict(entries, renames=args.rename, prefix=args.prefix,
                          keep_dtype=args.keep_dtype,
                          add_num_batches_tracked=args.add_num_batches_tracked,
                          num_batches_tracked=args.num_batches_tracked_value,
                          metadata=args.metadata)
    obj = wrap_checkpoint(sd, args.nest) if args.nest else sd
    save(obj, args.out, archive_name=args.archive_name)
    print("wrote %s: %d tensors%s" % (args.out, len(sd),
                                      " under key %r" % args.nest if args.nest else ""),
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
