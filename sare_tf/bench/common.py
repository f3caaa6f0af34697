"""What every benchmark shares: its parser, the hardware header, child processes, the JSON report.

Benchmarks whose figures depend on process-global state (the Keras dtype policy, oneDNN's
kernel cache, the peak-RSS counter) measure each configuration in a fresh Python process:
`run_child` starts `python -m sare_tf.bench <name> <flags>` and reads the JSON object the child
prints on its last line of output.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from sare_tf.hardware import ONEDNN_CAPS_WITHOUT_AVX512, cpu_info, describe_cpu, onednn_isa_cap

DEFAULT_DIR = "runs/bench"


def default_json(name: str) -> str:
    """The default report path of benchmark `name`: `runs/bench/<name>.json`."""
    return f"{DEFAULT_DIR}/{name}.json"


def _at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more. Received: {value}")
    return value


def add_repeats_argument(parser: argparse.ArgumentParser) -> None:
    """Adds `--repeats N`: every configuration measured N times, interleaved."""
    parser.add_argument(
        "--repeats", type=_at_least_one, default=1,
        help="measure every configuration this many times, interleaved (A B A B ...), so a "
        "ratio compares runs taken at the same time of a drifting machine; each keeps its "
        "fastest, and every ratio to PyTorch is also printed per repeat (default 1)",
    )  # fmt: skip


def ratios_by_repeat(ours: list[float], theirs: list[float]) -> list[float]:
    """Each repeat's ratio of two interleaved measurements (`--repeats`); [] with one repeat."""
    by_repeat = [round(a / b, 3) for a, b in zip(ours, theirs, strict=False)]
    return by_repeat if len(by_repeat) > 1 else []


def describe_ratios_by_repeat(by_repeat: list[float]) -> str:
    """`per repeat 1.15x / 1.16x / 1.18x (median 1.16x)`."""
    ratios = " / ".join(f"{ratio:.2f}x" for ratio in by_repeat)
    return f"per repeat {ratios} (median {statistics.median(by_repeat):.2f}x)"


def add_json_argument(
    parser: argparse.ArgumentParser, name: str, default_help: str | None = None
) -> None:
    """Adds `--json PATH` (alias `--out`) with the default `runs/bench/<name>.json`.

    With `default_help`, the flag defaults to None instead and the benchmark picks the path
    itself (described by `default_help`).
    """
    parser.add_argument(
        "--json",
        "--out",
        dest="json",
        default=None if default_help else default_json(name),
        metavar="PATH",
        help=f"where the JSON report is written (default: {default_help or default_json(name)})",
    )


def standalone_parser(module) -> argparse.ArgumentParser:
    """The parser of `python -m sare_tf.bench <name>`: the same flags as `sare-tf bench <name>`."""
    name = module.__name__.rsplit(".", 1)[-1]
    parser = argparse.ArgumentParser(
        prog=f"sare-tf bench {name}",
        description=module.DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    module.add_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """`python -m sare_tf.bench NAME [flags]`: runs benchmark NAME with its flags; a failed
    child process is an error message, not a traceback."""
    from sare_tf.bench import BENCHMARKS

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in BENCHMARKS:
        received = argv[0] if argv else "nothing"
        print(
            f"usage: python -m sare_tf.bench NAME [flags]; NAME is one of "
            f"{', '.join(BENCHMARKS)}. Received: {received}",
            file=sys.stderr,
        )
        return 2
    name, flags = argv[0], argv[1:]
    module = importlib.import_module(f"sare_tf.bench.{name}")
    args = standalone_parser(module).parse_args(flags)
    try:
        return int(module.run(args) or 0)
    except ChildProcessError as error:
        print(f"sare-tf bench {name}: error: {error}", file=sys.stderr)
        return 1


def process_status_kib(field: str, pid: int | str = "self") -> int | None:
    """A memory field of `/proc/<pid>/status` ("VmRSS", "VmHWM": the peak), in KiB; None
    without such a file (not Linux, or the process is gone)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def peak_rss_gib() -> float:
    """This process's peak resident memory so far (VmHWM), GiB; NaN where unknown."""
    kib = process_status_kib("VmHWM")
    return float("nan") if kib is None else round(kib / 2**20, 3)


def report_header(name: str) -> dict:
    """Prints the hardware line every benchmark starts with; returns the report's common fields.

    Args:
        name: the benchmark's name.

    Returns:
        `{"benchmark", "cpu": sare_tf.hardware.cpu_info(), "command", "load_average"}`; the load
        average tells a reader whether other work shared the machine during the measurement.
    """
    info = cpu_info()
    load = [round(value, 2) for value in os.getloadavg()] if hasattr(os, "getloadavg") else None
    print(f"sare-tf bench {name} on {describe_cpu(info)}; load average {load}", flush=True)
    return {
        "benchmark": name,
        "cpu": info,
        "command": " ".join(sys.argv),
        "load_average": load,
    }


def write_report(path: str | os.PathLike, report, **fields) -> None:
    """Writes `report`, updated with `fields` (e.g. `results=`), as indented JSON to `path`
    (creating folders) and says where."""
    report.update(fields)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))
    print(f"wrote {path}")


def child_environment(extra: dict | None = None) -> dict:
    """The environment of a child measurement: quiet TensorFlow logs, this process's sare_tf,
    and, under a oneDNN cap below AVX-512 (`ONEDNN_MAX_CPU_ISA=AVX2`), PyTorch's own kernels
    capped alike (`ATEN_CPU_CAPABILITY=avx2`) so that both frameworks emulate the same CPU."""
    import sare_tf

    env = {**os.environ, **(extra or {})}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if onednn_isa_cap(env) in ONEDNN_CAPS_WITHOUT_AVX512:
        env.setdefault("ATEN_CPU_CAPABILITY", "avx2")
    # The child must import the same sare_tf as this process (a source checkout or an install).
    package_root = str(Path(sare_tf.__file__).resolve().parent.parent)
    paths = [package_root, *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env


def run_child(name: str, flags: list[str], env: dict | None = None) -> dict:
    """Runs `python -m sare_tf.bench <name> <flags>` and returns the JSON its last line prints.

    Args:
        name: the benchmark module under `sare_tf.bench`.
        flags: its command-line flags (the child mode's hidden flag included).
        env: extra environment variables for the child.

    Returns:
        The decoded JSON object.

    Raises:
        ChildProcessError: when the child fails; the message holds the end of its stderr.
    """
    command = [sys.executable, "-m", "sare_tf.bench", name, *flags]
    completed = subprocess.run(command, capture_output=True, text=True, env=child_environment(env))
    lines = completed.stdout.strip().splitlines()
    if completed.returncode != 0 or not lines:
        tail = "\n".join(completed.stderr.strip().splitlines()[-15:])
        raise ChildProcessError(
            f"the benchmark child process failed (exit code {completed.returncode}): "
            f"{' '.join(command)}\n{tail}"
        )
    return json.loads(lines[-1])
