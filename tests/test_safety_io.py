"""The one output writer, the signals, and the memory budget under ``resource.setrlimit``.

Writes: the umask's mode for new files, the old mode kept, symbolic links written through,
hard links, devices, FIFOs and read-only files refused (read-only allowed with force), no
temporary file left after an exception, Ctrl-C or SIGTERM, stale temporaries of killed
writers removed, errors naming the user's path. Memory: refusals with numbers instead of
MemoryError, checked in subprocesses whose address space is limited.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import struct
import subprocess
import sys
import textwrap
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from cnnkit import io, memory

ROOT = Path(__file__).resolve().parents[1]


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".cnnkit-" in p.name)


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_new_files_get_the_umask_mode_and_old_files_keep_theirs(tmp_path, umask_022):
    new = tmp_path / "new.npy"
    io.save_array(new, np.zeros(3))
    assert _mode(new) == 0o644
    os.umask(0o077)
    io.save_image(tmp_path / "private.png", np.zeros((2, 2), np.uint8))
    assert _mode(tmp_path / "private.png") == 0o600
    os.chmod(new, 0o640)
    io.save_array(new, np.ones(3))
    assert _mode(new) == 0o640
    np.testing.assert_array_equal(np.load(new), np.ones(3))
    assert _leftovers(tmp_path) == []


def test_symlinks_are_written_through(tmp_path):
    real = tmp_path / "data" / "real.npy"
    real.parent.mkdir()
    io.save_array(real, np.zeros(2))
    link = tmp_path / "link.npy"
    link.symlink_to(real)
    io.save_array(link, np.arange(4.0))
    assert link.is_symlink()
    np.testing.assert_array_equal(np.load(real), np.arange(4.0))
    dangling = tmp_path / "dangling.npy"
    dangling.symlink_to(tmp_path / "data" / "later.npy")
    io.save_array(dangling, np.ones(1))
    assert dangling.is_symlink() and (tmp_path / "data" / "later.npy").is_file()


def test_refused_targets_are_left_untouched(tmp_path):
    first = tmp_path / "a.npy"
    io.save_array(first, np.zeros(2))
    os.link(first, tmp_path / "b.npy")
    with pytest.raises(ValueError, match="2 hard links"):
        io.save_array(first, np.ones(2))
    np.testing.assert_array_equal(np.load(tmp_path / "b.npy"), np.zeros(2))
    fifo = tmp_path / "pipe.npy"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="not a regular file"):
        io.save_array(fifo, np.ones(2))
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    with pytest.raises(ValueError, match="not a regular file"):
        io.check_output("/dev/null")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    with pytest.raises(ValueError, match="is a folder"):
        io.save_array(tmp_path, np.ones(2))
    readonly = tmp_path / "ro.csv"
    readonly.write_text("old\n")
    readonly.chmod(0o444)
    with pytest.raises(ValueError, match="read-only"):
        io.save_signal_csv(readonly, np.ones((1, 2)), ["v"])
    assert readonly.read_text() == "old\n"
    io.save_signal_csv(readonly, np.ones((1, 2)), ["v"], force=True)
    assert readonly.read_text().startswith("v\n") and _mode(readonly) == 0o444
    assert _leftovers(tmp_path) == []


def test_errors_name_the_users_path_and_leave_nothing(tmp_path):
    target = tmp_path / "out.npy"

    with pytest.raises(OSError) as caught:
        with io.atomic_write(target) as handle:
            handle.write(b"partial")
            raise OSError(28, "No space left on device")
    assert caught.value.filename == str(target)
    with pytest.raises(KeyboardInterrupt):
        with io.atomic_write(target) as handle:
            raise KeyboardInterrupt
    assert not target.exists() and _leftovers(tmp_path) == []


def test_stale_temporaries_of_dead_writers_are_removed(tmp_path):
    # a pid that cannot be running: above the kernel's pid_max
    stale = tmp_path / ".model.npz.cnnkit-4194399-0123abcd.npz"
    stale.write_bytes(b"half")
    mine = tmp_path / f".x.npy.cnnkit-{os.getpid()}-89abcdef.npy"
    mine.write_bytes(b"in progress")
    other = tmp_path / ".unrelated.tmp"
    other.write_bytes(b"")
    io.save_array(tmp_path / "x.npy", np.zeros(1))
    assert not stale.exists() and mine.exists() and other.exists()


WRITER = textwrap.dedent(
    """
    import sys, time
    from cnnkit import signals
    from cnnkit.io import atomic_write
    signals.install()
    try:
        with atomic_write(sys.argv[1]) as handle:
            handle.write(b"x" * 1000)
            print("writing", flush=True)
            time.sleep(30)
    except KeyboardInterrupt as exc:
        sys.exit(signals.exit_code(exc))
    """
)


@pytest.mark.parametrize("signum,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_during_a_write_leaves_no_temporary(tmp_path, signum, code):
    target = tmp_path / "out.bin"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(target)], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    assert proc.stdout.readline().strip() == "writing"
    assert _leftovers(tmp_path)  # the temporary exists while writing
    proc.send_signal(signum)
    assert proc.wait(timeout=20) == code
    assert not target.exists() and _leftovers(tmp_path) == []


# ------------------------------------------------------------------------- memory budget


def test_budget_follows_the_address_space_limit():
    code = (
        "import resource; from cnnkit import memory; a = memory.available_bytes(); "
        "resource.setrlimit(resource.RLIMIT_AS, (2 << 30, resource.RLIM_INFINITY)); "
        "print(a, memory.available_bytes())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    before, after = map(int, out.stdout.split())
    assert after < 2 << 30 and after <= before
    with pytest.raises(memory.MemoryBudgetError, match=r"needs about 1 PiB"):
        memory.check(1 << 50, "a test job")


LIMITED = textwrap.dedent(
    """
    import resource, sys
    resource.setrlimit(resource.RLIMIT_AS, (int(sys.argv[1]), resource.RLIM_INFINITY))
    sys.argv = ["cnnkit", *sys.argv[2:]]
    from cnnkit.cli.app import main
    main()
    """
)


def run_limited(args: list[str], cwd: Path, limit: int = 3 << 29) -> subprocess.CompletedProcess:
    """The real CLI in a child whose address space is capped (1.5 GiB by default)."""
    start = time.perf_counter()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-c", LIMITED, str(limit), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
        env=env,
    )
    assert time.perf_counter() - start < 30
    return done


def assert_refused(done: subprocess.CompletedProcess, *fragments: str) -> None:
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "MemoryError" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), done.stderr
    for fragment in fragments:
        assert fragment in done.stderr, done.stderr


def png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header promises width x height RGB pixels (the data is a stub)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def sparse_npy(path: Path, shape: tuple[int, ...]) -> None:
    """A float64 ``.npy`` of ``shape`` as a sparse file: its size is right, its disk use nil."""
    header = np.lib.format.header_data_from_array_1_0(np.zeros(1))
    header["shape"] = shape
    with open(path, "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, header)
        handle.truncate(handle.tell() + 8 * int(np.prod(shape)))


def test_memory_refusals_under_setrlimit(tmp_path):
    png_header_only(tmp_path / "big.png", 13000, 13000)
    done = run_limited(["filter", "big.png", "-k", "box", "-o", "out.png"], tmp_path)
    assert_refused(done, "13000 x 13000 x 3 image", "GiB", "smaller image")
    sparse_npy(tmp_path / "big.npy", (30000, 30000))
    done = run_limited(["filter", "big.npy", "-k", "box", "-o", "out.npy"], tmp_path)
    assert_refused(done, "30000 x 30000 float64", "needs about")
    done = run_limited(
        ["train", "--arch", "input 1 8 8; fc 1000000000", "--epochs", "1", "-o", "m.npz"], tmp_path
    )
    assert_refused(done, "65,000,000,000 parameters", "needs about")
    assert not (tmp_path / "out.png").exists() and not (tmp_path / "m.npz").exists()


def test_a_lying_zip_member_is_refused_before_it_is_inflated(tmp_path):
    """A model file whose member claims 3 GB: refused from the zip directory alone."""
    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("header.npy", b"\x93NUMPY" + b"\0" * 58)
    raw = bytearray(path.read_bytes())
    central = raw.rindex(b"PK\x01\x02")
    raw[central + 24 : central + 28] = struct.pack("<I", 3_000_000_000)
    path.write_bytes(bytes(raw))
    done = run_limited(["evaluate", "bomb.npz"], tmp_path)
    assert_refused(done, "bomb.npz", "needs about 2.79 GiB")


def test_big_images_are_refused_by_pixel_count_with_the_way_around(tmp_path):
    png_header_only(tmp_path / "wide.png", 200_000, 1000)
    with pytest.raises(ValueError, match=r"200000 x 1000 = 200,000,000 pixels.*max_pixels"):
        io.open_image(tmp_path / "wide.png")
    png_header_only(tmp_path / "small.png", 20, 20)
    with pytest.raises(ValueError, match="more than the limit of 100"):
        io.load(tmp_path / "small.png", max_pixels=100)


def test_json_outputs_and_checkpoints_still_round_trip(tmp_path, umask_022):
    with io.atomic_write(tmp_path / "r.json", "w") as handle:
        json.dump({"a": 1}, handle)
    assert json.loads((tmp_path / "r.json").read_text()) == {"a": 1}
    assert _mode(tmp_path / "r.json") == 0o644
