"""The floor of a merge: what any tool must do at least, timed as a whole process like the merges.

Starts the interpreter, imports torch and safetensors, reads every ``*.safetensors`` file of the input model
directories whole (sequential ``readinto`` of 64 MiB into one reused buffer: from the page cache once the files are
warm), then writes an output file of ``OUT_BYTES`` bytes (from that buffer, 64 MiB writes). No tensor is parsed, no
math is done, one thread. ``bench/merge_bench.py`` runs it in the same alternation as the merges, with the inputs of
each recipe and the size of the merged output, and reports each tool's wall time over it.

    python bench/floor.py [--gc-off] OUT_DIR OUT_BYTES MODEL_DIR [MODEL_DIR ...]

``--gc-off``: the same with Python's cyclic garbage collector off from before the imports and ``gc.freeze()`` at the
end, as ``safemerge merge`` runs (the collections during ``import torch`` and at interpreter exit traverse its ~1M
objects): the tighter floor for a tool that does the same.
"""

import gc
import os
import sys

GC_OFF = sys.argv[1:2] == ["--gc-off"]
if GC_OFF:
    gc.disable()

import safetensors  # noqa: E402, F401  (the import cost is part of the floor)
import torch  # noqa: E402, F401


def main(argv: list[str]) -> int:
    out_dir, out_bytes, *dirs = argv[1:] if argv[:1] == ["--gc-off"] else argv
    buf = memoryview(bytearray(64 << 20))
    for d in dirs:
        for name in sorted(os.listdir(d)):
            if name.endswith(".safetensors"):
                with open(os.path.join(d, name), "rb", buffering=0) as fh:
                    while fh.readinto(buf):
                        pass
    os.makedirs(out_dir, exist_ok=True)
    left = int(out_bytes)
    with open(os.path.join(out_dir, "model.safetensors"), "wb", buffering=0) as fh:
        while left > 0:
            left -= fh.write(buf[: min(left, len(buf))])
    if GC_OFF:
        gc.freeze()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
