"""Which versions of a model base path are served, and what labels point to: TF Serving's
`model_version_policy` (`latest { num_versions }`, `specific { versions }`, `all`) and
`version_labels`, as pure functions over version numbers."""

from __future__ import annotations

import dataclasses

POLICIES = ("latest", "specific", "all")


@dataclasses.dataclass(frozen=True)
class VersionPolicy:
    """Which of the versions found in the base path are served.

    Args:
        kind: "latest" (the `num_versions` highest), "specific" (those in `versions`) or "all".
        num_versions: for "latest".
        versions: for "specific".

    Example:
        >>> VersionPolicy("latest", num_versions=2).select([1, 2, 5])
        [2, 5]
    """

    kind: str = "latest"
    num_versions: int = 1
    versions: tuple[int, ...] = ()

    def __post_init__(self):
        if self.kind not in POLICIES:
            raise ValueError(f"--version-policy must be one of {POLICIES}. Received: {self.kind!r}")
        if self.kind == "latest" and self.num_versions < 1:
            raise ValueError(f"--num-versions must be at least 1. Received: {self.num_versions}")
        if self.kind == "specific" and not self.versions:
            raise ValueError("--version-policy specific needs --versions V [V ...].")
        if any(int(v) < 1 for v in self.versions):
            raise ValueError(f"Versions are positive integers. Received: {list(self.versions)}")

    def select(self, available) -> list[int]:
        """The versions to serve among `available` (sorted ascending)."""
        available = sorted({int(v) for v in available})
        if self.kind == "all":
            return available
        if self.kind == "specific":
            return [v for v in available if v in set(self.versions)]
        return available[-self.num_versions :]

    def describe(self) -> str:
        if self.kind == "latest":
            return f"latest {self.num_versions}"
        if self.kind == "specific":
            return "specific " + " ".join(str(v) for v in self.versions)
        return "all"


def parse_labels(items) -> dict[str, int]:
    """`["stable=1", "canary=2"]` -> `{"stable": 1, "canary": 2}` (`--version-label` flags)."""
    labels = {}
    for item in items or ():
        name, _, version = str(item).partition("=")
        if (
            not name
            or not version.isdigit()
            or int(version) < 1
            or not name.replace("_", "").replace("-", "").isalnum()
        ):
            raise ValueError(
                "A version label is NAME=VERSION with a name of letters, digits, '_' or '-' and "
                f"a positive version, e.g. stable=1. Received: {item!r}"
            )
        if name in labels:
            raise ValueError(f"The label {name!r} is given twice.")
        labels[name] = int(version)
    return labels
