"""A persistent place index: database descriptors, their positions and paths, searchable by faiss.

"Where was this photo taken?" is answered by `PlaceIndex.localize`: the photo's descriptor is
searched among the database descriptors and the positions of its matches give the answer.

Folder layout (one index, any size):
```
DIR/manifest.json            format, model fingerprint, image size, descriptor size, index
                             settings, counts, shard, creation info; the commit point
DIR/g0001-descriptors.npy    float32 [N, D], the raw descriptors (kept for add, merge, re-ranking)
DIR/g0001-positions.npy      float64 [N, 2], metres in the dataset's frame (UTM easting, northing)
DIR/g0001-paths.txt          one database image path per line (UTF-8)
DIR/g0001.faiss              the faiss index (`faiss.write_index`)
DIR/.work-*/                 encoding in progress: one file per chunk of images; a killed build
                             resumes from it
```
Every change writes a new generation of files and then replaces `manifest.json` (an atomic
rename): an interrupted `add` or `merge` leaves the previous index as it was.

City scale: `build(shard=(i, n))` encodes only the i-th of n contiguous parts of the image list,
so n independent workers (a Kubernetes Indexed Job, a Slurm array) each write a shard, and
`merge` combines complete shards, streaming their descriptors (memory-mapped, in blocks): the
merged index equals one build over the whole list.

Unreadable database images are skipped and counted (`manifest["skipped"]`), never indexed.
"""

# ruff: noqa: E741  (faiss naming: D, I = index.search(xq, k))
from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import logging
import os
import shutil
import zipfile

import faiss
import numpy as np

from sare_tf._version import __version__
from sare_tf.artifacts import model_fingerprint
from sare_tf.atomic import atomic_file, write_json_atomic, write_text_atomic
from sare_tf.data.geodesy import UtmFrame
from sare_tf.encoding import encode
from sare_tf.index.config import IndexConfig, as_index_config
from sare_tf.index.faiss_search import search_index, trained_index, training_sample

logger = logging.getLogger(__name__)

FORMAT = "sare_tf.index.store"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
CONSENSUS_RADIUS_M = 25.0
# The position estimate and its confidence come from this many best matches, whatever number
# of matches is asked for, so that they do not change with --top-k.
CONSENSUS_NEIGHBOURS = 10
_ADD_BLOCK = 65_536


class IndexMismatchError(ValueError):
    """The model or data given does not belong to this index (the message says why)."""


# --- pure helpers ------------------------------------------------------------------------------


def shard_range(num_images: int, shard: int, num_shards: int, align: int = 1) -> tuple[int, int]:
    """`(start, stop)` of shard `shard` of `num_shards` contiguous, near-equal parts.

    With `align`, every boundary is a multiple of it (the encoding chunk size), so each image is
    encoded in the same chunk, hence the same batches, as in one build over the whole list: the
    merged index then equals that build bit for bit.
    """
    if not (isinstance(num_shards, int) and num_shards >= 1 and 0 <= shard < num_shards):
        raise ValueError(
            f"A shard is I/N with 0 <= I < N. Received: shard={shard}, num_shards={num_shards}"
        )
    blocks = -(-num_images // align)
    bounds = np.minimum(
        np.linspace(0, blocks, num_shards + 1).round().astype(int) * align, num_images
    )
    return int(bounds[shard]), int(bounds[shard + 1])


def parse_shard(text: str) -> tuple[int, int]:
    """`"2/8"` -> `(2, 8)`."""
    try:
        shard, num_shards = (int(part) for part in str(text).split("/"))
    except ValueError:
        raise ValueError(f"A shard is written I/N, e.g. 0/4. Received: {text!r}") from None
    shard_range(0, shard, num_shards)  # validates
    return shard, num_shards


def consensus(positions: np.ndarray, similarities: np.ndarray, radius_m: float = 25.0) -> dict:
    """The best match's place, refined by the matches that agree with it, and how sure it is.

    Rule: the group is the best match and every other match within `radius_m` of it; the
    estimate is the similarity-weighted mean position of that group. (Voting for the largest
    group instead was measured worse: on the demo's synthetic-city test split it put 49.0 % of
    the answers within 25 m against 70.0 % for this rule; repeated facades elsewhere gather
    more matches than the right place does.) Confidence is a ratio test between places: with
    `d_in` the descriptor distance of the best match (in the group) and `d_out` that of the best
    match outside the group (the last match's when all are inside), `confidence = 1 - d_in /
    d_out` (0: another place matches as well; near 1: nothing else comes close). Distances are
    the L2 distances between unit descriptors that `localize` prints, `sqrt(2 - 2 *
    similarity)`.

    Args:
        positions: `[k, 2]` positions of the matches, best first.
        similarities: `[k]` their inner products with the query (unit descriptors).
        radius_m: group radius.

    Returns:
        `{"position": [x, y], "members": bool [k], "confidence": float}`.
    """
    positions = np.asarray(positions, np.float64).reshape(-1, 2)
    similarities = np.asarray(similarities, np.float64).reshape(-1)
    members = np.sqrt(np.sum((positions - positions[0]) ** 2, axis=-1)) <= radius_m
    weights = np.maximum(similarities[members], 0.0) + 1e-9
    estimate = (positions[members] * weights[:, None]).sum(axis=0) / weights.sum()
    distances = np.sqrt(np.maximum(2.0 - 2.0 * similarities, 0.0))
    inside = distances[members].min()
    outside = distances[~members].min() if (~members).any() else distances.max()
    confidence = float(np.clip(1.0 - inside / outside, 0.0, 1.0)) if outside > 0 else 0.0
    return {"position": estimate.tolist(), "members": members, "confidence": confidence}


def _save_npy_atomic(path: str, array: np.ndarray) -> None:
    with atomic_file(path, ".npy") as temporary:
        np.save(temporary, array)


def _list_hash(paths, positions) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.encode("utf-8") + b"\0")
    digest.update(np.ascontiguousarray(np.asarray(positions, np.float64)).tobytes())
    return digest.hexdigest()


# --- encoding, resumable ---------------------------------------------------------------------


def encode_resumable(
    loaded,
    image_paths,
    work_dir: str,
    identity: dict,
    chunk_size: int = 512,
    batch_size: int = 16,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Encodes images chunk by chunk into `work_dir`, skipping the chunks already there.

    Each chunk is written atomically, so a run killed at any point resumes at the first missing
    chunk. `identity` (model fingerprint, image list hash, image size, chunk size) is written
    once; a work folder of another identity is refused rather than mixed in.

    Returns:
        `(descriptors memmap [N, D] float32 in work_dir, valid [N] bool)`.
    """
    os.makedirs(work_dir, exist_ok=True)
    identity_path = os.path.join(work_dir, "identity.json")
    if os.path.exists(identity_path):
        with open(identity_path, encoding="utf-8") as handle:
            recorded = json.load(handle)
        if recorded != identity:
            raise IndexMismatchError(
                f"{work_dir} holds a partial build of other images or another model "
                f"(recorded {recorded}, now {identity}). Delete it to start over."
            )
    else:
        write_json_atomic(identity_path, identity)
    paths = list(image_paths)
    starts = list(range(0, len(paths), chunk_size))
    done = [s for s in starts if os.path.exists(os.path.join(work_dir, f"chunk-{s:010d}.npz"))]
    if done and progress:
        logger.info(f"Resuming: {len(done)} of {len(starts)} chunks already encoded in {work_dir}")
    for number, start in enumerate(starts):
        chunk_path = os.path.join(work_dir, f"chunk-{start:010d}.npz")
        if os.path.exists(chunk_path):
            continue
        if progress:
            logger.info(f"Encoding chunk {number + 1}/{len(starts)} ({start}-{start + chunk_size})")
        descriptors, valid = encode(
            loaded, paths[start : start + chunk_size], batch_size=batch_size, progress=progress,
            require_any=False,  # a chunk of only bad images is skipped and counted, not fatal
        )  # fmt: skip
        with atomic_file(chunk_path, ".npz") as temporary:
            np.savez(temporary, descriptors=np.asarray(descriptors, np.float32), valid=valid)
    return _assemble_chunks(work_dir, starts)


def _npz_member_shape(path: str, name: str) -> tuple[int, ...]:
    """The shape of array `name` in an `.npz` file, read from its header only."""
    with zipfile.ZipFile(path) as archive, archive.open(f"{name}.npy") as member:
        version = np.lib.format.read_magic(member)
        if version == (1, 0):
            shape, _, _ = np.lib.format.read_array_header_1_0(member)
        else:
            shape, _, _ = np.lib.format.read_array_header_2_0(member)
    return tuple(shape)


def _assemble_chunks(work_dir: str, starts) -> tuple[str, np.ndarray]:
    """`(path of all descriptors [N, D] .npy, valid [N])` from the chunk files, each read once."""
    chunk_paths = [os.path.join(work_dir, f"chunk-{start:010d}.npz") for start in starts]
    shapes = [_npz_member_shape(path, "descriptors") for path in chunk_paths]
    total = sum(shape[0] for shape in shapes)
    dim = max((shape[1] for shape in shapes if len(shape) == 2), default=0)
    valid = np.zeros(total, bool)

    def blocks():
        offset = 0
        for path in chunk_paths:
            with np.load(path) as chunk:
                part = chunk["valid"]
                valid[offset : offset + len(part)] = part
                offset += len(part)
                descriptors = chunk["descriptors"]
                if descriptors.shape[1:] != (dim,):  # a chunk of only unreadable images
                    descriptors = np.zeros((len(part), dim), np.float32)
                yield descriptors

    target = os.path.join(work_dir, "all-descriptors.npy")
    return _write_rows(target, total, dim, blocks()), valid


# --- the index --------------------------------------------------------------------------------


@dataclasses.dataclass
class PlaceIndex:
    """A loaded place index (see the module docstring). Numpy in, numpy out; faiss names.

    Attributes:
        folder: where it lives.
        manifest: its `manifest.json`.
        faiss_index: the faiss index over the descriptors.
        positions: `[N, 2]` float64 positions (metres).
        paths: the N database image paths.

    Example:
        >>> loaded = load_descriptor_model("saved_models/city")
        >>> index = PlaceIndex.build(loaded, dataset.db_image_paths(), dataset.db_utm, "idx")
        >>> D, I = index.search(query_descriptors, k=10)
        >>> index.localize(query_descriptors)[0]["position"]
    """

    folder: str
    manifest: dict
    faiss_index: object
    positions: np.ndarray
    paths: list

    # -- reading ------------------------------------------------------------------------------

    @classmethod
    def load(cls, folder) -> PlaceIndex:
        """Opens the index in `folder`.

        Raises:
            FileNotFoundError: no index there.
            ValueError: a manifest of another format or version, or a missing / damaged file
                (named).
        """

        folder = os.path.abspath(os.fspath(folder))
        manifest = read_manifest(folder)
        files = {key: os.path.join(folder, name) for key, name in manifest["files"].items()}
        for key, path in files.items():
            if not os.path.isfile(path):
                raise ValueError(f"The place index in {folder} lacks its {key} file {path}.")
        try:
            faiss_index = faiss.read_index(files["faiss"])
            positions = np.load(files["positions"])
            with open(files["paths"], encoding="utf-8") as handle:
                paths = handle.read().split("\n")[:-1]
        except (RuntimeError, OSError, ValueError) as error:
            raise ValueError(f"The place index in {folder} is damaged: {error}") from error
        count = manifest["count"]
        if not (faiss_index.ntotal == len(positions) == len(paths) == count):
            raise ValueError(
                f"The place index in {folder} is inconsistent: manifest {count} images, faiss "
                f"{faiss_index.ntotal}, positions {len(positions)}, paths {len(paths)}."
            )
        return cls(folder, manifest, faiss_index, positions, paths)

    def descriptors(self) -> np.ndarray:
        """The raw `[N, D]` descriptors, memory-mapped (read-only)."""
        path = os.path.join(self.folder, self.manifest["files"]["descriptors"])
        return np.load(path, mmap_mode="r")

    @property
    def count(self) -> int:
        return int(self.manifest["count"])

    @property
    def frame(self):
        """The `UtmFrame` of the positions (None: metres of an unknown frame)."""

        return UtmFrame.from_dict(self.manifest.get("frame"))

    def model_path(self) -> str:
        """The model the index was built with, found from wherever the index is now.

        Looked for relative to the index folder first (an index moved together with its model),
        then at the absolute path recorded at build time.

        Raises:
            FileNotFoundError: neither exists; the message says what the manifest names and how
                to give the model instead (`--model`).
        """
        model = self.manifest["model"]
        candidates = []
        if model.get("path_from_index"):
            candidates.append(os.path.normpath(os.path.join(self.folder, model["path_from_index"])))
        if model.get("path"):
            candidates.append(
                model["path"]
                if os.path.isabs(model["path"])
                else os.path.join(self.folder, model["path"])
            )
        for candidate in candidates:
            if os.path.exists(candidate):
                return candidate
        looked = " or ".join(dict.fromkeys(candidates)) or "nowhere (no path recorded)"
        raise FileNotFoundError(
            f"The index in {self.folder} was built with the model {model.get('path')!r} (its "
            f"manifest.json, model.path), which is not there: looked at {looked}. Pass the model "
            f"with --model PATH (the one with fingerprint {model['fingerprint'][:19]}...)."
        )

    def info(self) -> dict:
        """The manifest plus the folder (what `sare-tf index info` prints)."""
        return {"folder": self.folder, **self.manifest}

    def check_model(self, loaded) -> None:
        """Refuses a model whose descriptors are not those of this index.

        Raises:
            IndexMismatchError: another fingerprint or descriptor size (both named).
        """
        expected = self.manifest["model"]["fingerprint"]
        found = model_fingerprint(loaded)
        if found != expected:
            raise IndexMismatchError(
                f"The model {loaded.path} (fingerprint {found[:19]}...) is not the model this "
                f"index was built with ({self.manifest['model'].get('path')}, fingerprint "
                f"{expected[:19]}...): its descriptors would not be comparable. Use that model, "
                f"or build an index with this one."
            )

    # -- searching ----------------------------------------------------------------------------

    def search(self, xq, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """`(D, I)`: `[Nq, k]` similarities (decreasing) and database ids (`-1` past N)."""

        return search_index(self.faiss_index, xq, k)

    def localize(self, xq, k: int = 10, radius_m: float = CONSENSUS_RADIUS_M) -> list[dict]:
        """Where each query was taken: its top-k matches, a position estimate and a confidence.

        Args:
            xq: `[Nq, D]` query descriptors (from the index's model).
            k: matches per query.
            radius_m: consensus radius (see `consensus`). The position and the confidence are
                the consensus of the `CONSENSUS_NEIGHBOURS` (10) best matches whatever `k` is.

        Returns:
            Per query: `{"matches": [{"rank", "db_id", "path", "similarity", "distance",
            "position"}], "position_top1": [x, y], "position": [x, y] (consensus),
            "consensus_size": int, "confidence": float}`; where the index records its frame
            (positions given in latitude / longitude), also `"latlon"` of each match and
            `"position_latlon"`, `"position_top1_latlon"` as `[latitude, longitude]` degrees.
        """
        answers = self._localize_metres(xq, k, radius_m)
        frame = self.frame
        if frame is not None:
            for answer in answers:
                add_latlon(answer, frame)
        return answers

    def _localize_metres(self, xq, k: int, radius_m: float) -> list[dict]:
        D, I = self.search(xq, max(k, CONSENSUS_NEIGHBOURS))
        answers = []
        for similarities, ids in zip(D, I, strict=True):
            found = ids >= 0
            similarities, ids = similarities[found].astype(np.float64), ids[found]
            if ids.size == 0:
                answers.append({"matches": [], "position": None, "confidence": 0.0})
                continue
            near = slice(0, CONSENSUS_NEIGHBOURS)
            agreed = consensus(self.positions[ids[near]], similarities[near], radius_m)
            similarities, ids = similarities[:k], ids[:k]
            positions = self.positions[ids]
            matches = [
                {
                    "rank": rank + 1,
                    "db_id": int(db_id),
                    "path": self.paths[db_id],
                    "similarity": round(float(similarity), 6),
                    "distance": round(float(np.sqrt(max(2.0 - 2.0 * similarity, 0.0))), 6),
                    "position": [float(v) for v in position],
                }
                for rank, (db_id, similarity, position) in enumerate(
                    zip(ids, similarities, positions, strict=True)
                )
            ]
            answers.append(
                {
                    "matches": matches,
                    "position_top1": matches[0]["position"],
                    "position": [float(v) for v in agreed["position"]],
                    "consensus_size": int(agreed["members"].sum()),
                    "confidence": round(agreed["confidence"], 6),
                }
            )
        return answers

    # -- writing ------------------------------------------------------------------------------

    @classmethod
    def from_descriptors(
        cls, descriptor_file, positions, paths, folder, model: dict, index="flat", frame=None,
    ) -> PlaceIndex:  # fmt: skip
        """An index of descriptors computed elsewhere (a `.npy` file of float32 `[N, D]`).

        The file is moved into the index folder (same file system) and read block by block.

        Args:
            descriptor_file: the `.npy` file (unit-norm rows).
            positions: `[N, 2]` positions in metres.
            paths: the N image paths.
            folder: the index folder (new).
            model: the manifest's model section: at least "fingerprint" (what `check_model`
                compares) and "image_size"; "path", "name", "kind" where known.
            index: "flat", "ivfpq", "hnsw" or an `IndexConfig` with their settings.
            frame: the `UtmFrame` of the positions, if they came from latitude / longitude.
        """

        folder = os.path.abspath(os.fspath(folder))
        if os.path.exists(os.path.join(folder, MANIFEST)):
            raise FileExistsError(f"{folder} already holds a place index; pick a new folder.")
        shape = _npy_layout(os.fspath(descriptor_file))[0]
        positions = _check_positions(positions, shape[0])
        if len(paths) != shape[0]:
            raise ValueError(f"{len(paths)} paths for {shape[0]} descriptors.")
        config = as_index_config(index)
        manifest = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "model": {
                "path": None, "name": None, "kind": None, **model,
                "descriptor_dim": int(shape[1]),
            },
            "index": dataclasses.asdict(config),
            "frame": frame_record(frame),
            "shard": None,
            "skipped": {"count": 0, "examples": []},
        }  # fmt: skip
        return _write_generation(
            folder, manifest, os.fspath(descriptor_file), positions, list(paths), config
        )

    @classmethod
    def build(
        cls,
        loaded,
        image_paths,
        positions,
        folder,
        index="flat",
        shard: tuple[int, int] | None = None,
        batch_size: int = 16,
        chunk_size: int = 512,
        progress: bool = True,
        frame=None,
        overwrite: bool = False,
    ) -> PlaceIndex:
        """Encodes database images and writes a new index (or one shard of it) to `folder`.

        Args:
            loaded: a `DescriptorModel` (`sare_tf.artifacts.descriptor_model.load_descriptor_model`).
            image_paths: database image files.
            positions: `[N, 2]` their positions in metres.
            folder: the index folder (must not hold an index yet).
            index: "flat", "ivfpq", "hnsw" or an `IndexConfig` with their settings.
            shard: `(i, n)`: encode only the i-th of n contiguous parts (merge them later).
            batch_size: images per model call.
            chunk_size: images per resumable chunk.
            progress: progress lines and bars.
            frame: the `UtmFrame` the positions are in (datasets read from latitude /
                longitude have one): recorded, so that answers also come in degrees.
            overwrite: replace an index already in `folder` (its files only).
        """
        folder = os.path.abspath(os.fspath(folder))
        if os.path.exists(os.path.join(folder, MANIFEST)):
            if not overwrite:
                raise FileExistsError(
                    f"{folder} already holds a place index: `sare-tf index add` appends to it, "
                    "--overwrite replaces it, or pick a new folder with --out."
                )
            remove_index_files(folder)
        paths = [os.fspath(p) for p in image_paths]
        positions = _check_positions(positions, len(paths))
        total = len(paths)
        start, stop = (0, total) if shard is None else shard_range(total, *shard, align=chunk_size)
        config = as_index_config(index)
        fingerprint = model_fingerprint(loaded)
        identity = {
            "fingerprint": fingerprint,
            "images": _list_hash(paths[start:stop], positions[start:stop]),
            "image_size": None if loaded.image_size is None else list(loaded.image_size),
            "chunk_size": int(chunk_size),
        }
        work = os.path.join(folder, f".work-{identity['images'][:16]}")
        descriptor_file, valid = encode_resumable(
            loaded, paths[start:stop], work, identity, chunk_size, batch_size, progress
        )
        manifest = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "model": _model_section(
                loaded, fingerprint, _npy_layout(descriptor_file)[0][1], folder
            ),
            "index": dataclasses.asdict(config),
            "frame": frame_record(frame),
            "shard": None
            if shard is None
            else {
                "index": shard[0],
                "count": shard[1],
                "start": start,
                "stop": stop,
                "total": total,
            },
            "skipped": _skipped(paths[start:stop], valid),
        }
        kept = np.flatnonzero(valid)
        readable = _concatenate_rows(os.path.join(work, "readable.npy"), [(descriptor_file, kept)])
        index_object = _write_generation(
            folder,
            manifest,
            readable,
            positions[start:stop][kept],
            [paths[start + i] for i in kept],
            # A shard is searchable exactly; the requested index is built when shards merge.
            config if shard is None else as_index_config("flat"),
        )
        shutil.rmtree(work, ignore_errors=True)
        return index_object

    def add(
        self, loaded, image_paths, positions, batch_size: int = 16, chunk_size: int = 512,
        progress: bool = True, frame=None,
    ) -> PlaceIndex:  # fmt: skip
        """Appends database images (the same model only); returns the updated index.

        The new generation is written beside the current one and committed by replacing the
        manifest: an interrupted `add` leaves the index as it was.
        """
        self.check_model(loaded)
        if frame_record(frame) is not None and frame_record(frame) != self.manifest.get("frame"):
            index_frame = self.frame or "metres of an unknown frame"
            raise IndexMismatchError(
                f"The new positions are in {frame}, the index in {index_frame}: their distances "
                "would not be comparable."
            )
        paths = [os.fspath(p) for p in image_paths]
        positions = _check_positions(positions, len(paths))
        identity = {
            "fingerprint": self.manifest["model"]["fingerprint"],
            "images": _list_hash(paths, positions),
            "image_size": self.manifest["model"]["image_size"],
            "chunk_size": int(chunk_size),
        }
        work = os.path.join(self.folder, f".work-add-{identity['images'][:16]}")
        new_file, valid = encode_resumable(
            loaded, paths, work, identity, chunk_size, batch_size, progress
        )
        kept = np.flatnonzero(valid)
        old_file = os.path.join(self.folder, self.manifest["files"]["descriptors"])
        combined = _concatenate_rows(
            os.path.join(work, "combined.npy"), [(old_file, None), (new_file, kept)]
        )
        manifest = dict(self.manifest)
        manifest["skipped"] = _merge_skipped([self.manifest["skipped"], _skipped(paths, valid)])
        faiss_index = self.faiss_index
        added = _concatenate_rows(os.path.join(work, "added.npy"), [(new_file, kept)])
        for first in range(0, len(kept), _ADD_BLOCK):
            faiss_index.add(read_rows(added, first, first + _ADD_BLOCK))
        updated = _write_generation(
            self.folder,
            manifest,
            combined,
            np.concatenate([self.positions, positions[kept]]),
            self.paths + [paths[i] for i in kept],
            faiss_index=faiss_index,
        )
        shutil.rmtree(work, ignore_errors=True)
        return updated

    @classmethod
    def merge(cls, shard_folders, folder, progress: bool = True) -> PlaceIndex:
        """Combines the complete set of shards of one build into one index in `folder`.

        Descriptors are streamed from the shards' memory-mapped files in blocks, never all in
        memory; the result equals one `build` over the whole image list.

        Raises:
            IndexMismatchError: shards of different models, builds or index settings, or a
                shard missing or given twice (named).
        """

        shards = [cls.load(f) for f in shard_folders]
        _check_shards(shards)
        shards.sort(key=lambda s: s.manifest["shard"]["index"])
        folder = os.path.abspath(os.fspath(folder))
        if os.path.exists(os.path.join(folder, MANIFEST)):
            raise FileExistsError(f"{folder} already holds a place index; merge into a new folder.")
        os.makedirs(folder, exist_ok=True)
        work = os.path.join(folder, ".work-merge")
        os.makedirs(work, exist_ok=True)
        if progress:
            logger.info(f"Merging {len(shards)} shards ({sum(s.count for s in shards)} images)")
        combined = _concatenate_rows(
            os.path.join(work, "combined.npy"),
            [(os.path.join(s.folder, s.manifest["files"]["descriptors"]), None) for s in shards],
        )
        first = shards[0].manifest
        manifest = {
            **{key: first[key] for key in ("format", "version", "model", "index")},
            "frame": first.get("frame"),
            "shard": None,
            "merged_from": [s.folder for s in shards],
            "skipped": _merge_skipped([s.manifest["skipped"] for s in shards]),
        }
        merged = _write_generation(
            folder,
            manifest,
            combined,
            np.concatenate([s.positions for s in shards]),
            [p for s in shards for p in s.paths],
            IndexConfig(**first["index"]),
        )
        shutil.rmtree(work, ignore_errors=True)
        return merged


# --- writing helpers ---------------------------------------------------------------------------


def read_manifest(folder: str) -> dict:
    """The index manifest in `folder`, checked for this format and version.

    Raises:
        FileNotFoundError: no manifest there.
        ValueError: unreadable, or another format or version (named).
    """
    path = os.path.join(folder, MANIFEST)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No place index in {folder} (no {MANIFEST}).")
    try:
        with open(path, encoding="utf-8") as handle:
            manifest = json.load(handle)
    except (OSError, ValueError) as error:
        raise ValueError(f"{path} is not a readable place-index manifest: {error}") from error
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ValueError(f"{path} is not a sare_tf place index (format {FORMAT!r} expected).")
    if manifest.get("version") != FORMAT_VERSION:
        raise ValueError(
            f"{path} is a place index of format version {manifest.get('version')}; this sare_tf "
            f"reads version {FORMAT_VERSION}."
        )
    return manifest


def _check_positions(positions, count: int) -> np.ndarray:
    positions = np.asarray(positions, np.float64)
    if positions.shape != (count, 2):
        raise ValueError(
            f"`positions` must be [{count}, 2] (one per image). Received: {positions.shape}"
        )
    bad = np.flatnonzero(~np.isfinite(positions).all(axis=1))
    if bad.size:
        raise ValueError(f"Non-finite position for image {bad[0]}: {positions[bad[0]].tolist()}")
    return positions


def _model_section(loaded, fingerprint: str, dim: int, folder: str) -> dict:
    path = None if loaded.path is None else os.path.abspath(loaded.path)
    return {
        "fingerprint": fingerprint,
        "path": path,
        # Resolved from the index folder first, so that a folder moved together with its
        # model (or a tree copied elsewhere) still finds it.
        "path_from_index": None if path is None else os.path.relpath(path, folder),
        "name": loaded.name,
        "kind": loaded.kind,
        "image_size": None if loaded.image_size is None else list(loaded.image_size),
        "descriptor_dim": int(dim),
    }


def add_latlon(answer: dict, frame) -> None:
    """Adds `[latitude, longitude]` beside every position of a `localize` answer."""
    if not answer.get("matches"):
        return
    points = [answer["position"], answer["position_top1"]] + [
        m["position"] for m in answer["matches"]
    ]
    degrees = [[round(float(v), 7) for v in row] for row in frame.to_latlon(points)]
    answer["position_latlon"], answer["position_top1_latlon"] = degrees[0], degrees[1]
    for match, latlon in zip(answer["matches"], degrees[2:], strict=True):
        match["latlon"] = latlon


def frame_record(frame) -> dict | None:
    """What the manifest records of the positions' frame (a `UtmFrame`), or None (metres)."""
    return frame.as_dict() if hasattr(frame, "as_dict") else None


def remove_index_files(folder: str) -> None:
    """Deletes the index in `folder` (its manifest and the files it lists; nothing else)."""
    manifest = read_manifest(folder)
    for name in manifest.get("files", {}).values():
        try:
            os.remove(os.path.join(folder, name))
        except FileNotFoundError:
            pass
    os.remove(os.path.join(folder, MANIFEST))


def _skipped(paths, valid) -> dict:
    bad = [paths[i] for i in np.flatnonzero(~np.asarray(valid, bool))]
    return {"count": len(bad), "examples": bad[:20]}


def _merge_skipped(parts) -> dict:
    return {
        "count": sum(p["count"] for p in parts),
        "examples": [e for p in parts for e in p["examples"]][:20],
    }


def _npy_layout(path: str) -> tuple[tuple, np.dtype, int]:
    """`(shape, dtype, data offset)` of a C-ordered `.npy` file."""
    with open(path, "rb") as handle:
        version = np.lib.format.read_magic(handle)
        read_header = (
            np.lib.format.read_array_header_1_0
            if version == (1, 0)
            else np.lib.format.read_array_header_2_0
        )
        shape, fortran, dtype = read_header(handle)
        if fortran:
            raise ValueError(f"{path}: Fortran-ordered arrays are not supported.")
        return shape, dtype, handle.tell()


def read_rows(path: str, start: int, stop: int) -> np.ndarray:
    """Rows `[start, stop)` of a 2-D `.npy` file, read with plain file reads.

    Unlike a memory map, nothing stays mapped (and counted in the process's resident memory)
    after the call: blocks of a file larger than memory pass through a bounded buffer.
    """
    shape, dtype, offset = _npy_layout(path)
    start, stop = max(0, start), min(shape[0], stop)
    width = int(np.prod(shape[1:], dtype=np.int64))
    with open(path, "rb") as handle:
        handle.seek(offset + start * width * dtype.itemsize)
        values = np.fromfile(handle, dtype=dtype, count=max(stop - start, 0) * width)
    return values.reshape((max(stop - start, 0), *shape[1:]))


class _TrainingRows:
    """What `trained_index` reads of a descriptor file: its shape, and the sampled rows."""

    def __init__(self, path: str, count: int, sample):
        self.path, self.sample = path, sample
        self.shape = (count, int(_npy_layout(path)[0][1]))

    def __getitem__(self, rows):
        if isinstance(rows, slice):
            return read_rows(self.path, rows.start or 0, rows.stop or self.shape[0])
        rows = np.asarray(rows)
        return (
            np.concatenate([read_rows(self.path, int(r), int(r) + 1) for r in rows])
            if len(rows) < 1024
            else self._gather(rows)
        )

    def _gather(self, rows):
        out = np.empty((len(rows), self.shape[1]), np.float32)
        for first in range(0, self.shape[0], _ADD_BLOCK):
            inside = (rows >= first) & (rows < first + _ADD_BLOCK)
            if inside.any():
                block = read_rows(self.path, first, first + _ADD_BLOCK)
                out[inside] = block[rows[inside] - first]
        return out


def _write_rows(path: str, count: int, dim: int, blocks) -> str:
    """Writes a float32 `[count, dim]` `.npy` file from an iterable of row blocks."""
    header = {"descr": "<f4", "fortran_order": False, "shape": (count, dim)}
    written = 0
    with open(path, "wb") as handle:
        np.lib.format.write_array_header_2_0(handle, header)
        for block in blocks:
            block = np.ascontiguousarray(block, dtype="<f4").reshape(-1, dim)
            handle.write(block.tobytes())
            written += len(block)
    if written != count:
        raise RuntimeError(f"{path}: wrote {written} rows, expected {count}.")
    return path


def _concatenate_rows(path: str, parts) -> str:
    """Writes the rows of `(npy path, row ids or None)` parts one after another; returns `path`."""
    layouts = [(_npy_layout(source)[0], rows) for source, rows in parts]
    count = sum(shape[0] if rows is None else len(rows) for shape, rows in layouts)
    dim = next((int(shape[1]) for shape, _ in layouts if shape[0]), 0)

    def blocks():
        for source, rows in parts:
            total = _npy_layout(source)[0][0]
            if rows is None:
                for first in range(0, total, _ADD_BLOCK):
                    yield read_rows(source, first, first + _ADD_BLOCK)
                continue
            for first in range(0, len(rows), _ADD_BLOCK):
                ids = rows[first : first + _ADD_BLOCK]
                window = read_rows(source, int(ids[0]), int(ids[-1]) + 1)
                yield window[ids - ids[0]]

    return _write_rows(path, count, dim, blocks())


def _write_generation(
    folder, manifest, descriptor_file, positions, paths, config=None, faiss_index=None
) -> PlaceIndex:
    """Writes generation g+1 of the index files, then commits the manifest (atomic rename).

    `descriptor_file` (a finished `.npy` on the same file system) is moved into place; the faiss
    index is built from it block by block unless one is given.
    """

    os.makedirs(folder, exist_ok=True)
    previous = read_manifest(folder) if os.path.exists(os.path.join(folder, MANIFEST)) else {}
    generation = int(previous.get("generation", 0)) + 1
    prefix = f"g{generation:04d}"
    files = {
        "descriptors": f"{prefix}-descriptors.npy",
        "positions": f"{prefix}-positions.npy",
        "paths": f"{prefix}-paths.txt",
        "faiss": f"{prefix}.faiss",
    }
    target = os.path.join(folder, files["descriptors"])
    os.replace(descriptor_file, target)
    if faiss_index is None:
        count = _npy_layout(target)[0][0]
        sample = training_sample(count, config)
        # Only the training rows are read (in one go; IVF-PQ trains on at most its sample size).
        train = _TrainingRows(target, count, sample)
        faiss_index = trained_index(train, count, config)
        for first in range(0, count, _ADD_BLOCK):
            faiss_index.add(read_rows(target, first, first + _ADD_BLOCK))
    _save_npy_atomic(os.path.join(folder, files["positions"]), np.asarray(positions, np.float64))
    write_text_atomic(os.path.join(folder, files["paths"]), "".join(f"{p}\n" for p in paths))
    faiss_path = os.path.join(folder, files["faiss"])
    faiss.write_index(faiss_index, f"{faiss_path}.tmp")
    os.replace(f"{faiss_path}.tmp", faiss_path)

    manifest = {
        **manifest,
        "generation": generation,
        "files": files,
        "count": int(len(paths)),
        "updated_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "created_utc": previous.get("created_utc")
        or datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "sare_tf_version": __version__,
    }
    write_json_atomic(os.path.join(folder, MANIFEST), manifest)
    for name in previous.get("files", {}).values():  # the old generation, now unreferenced
        if name not in files.values():
            try:
                os.remove(os.path.join(folder, name))
            except OSError:
                pass
    return PlaceIndex.load(folder)


def _check_shards(shards) -> None:
    if not shards:
        raise ValueError("No shard to merge.")
    first = shards[0].manifest
    for shard in shards:
        manifest = shard.manifest
        if manifest.get("shard") is None:
            raise IndexMismatchError(f"{shard.folder} is a whole index, not a shard of one.")
        for key in ("fingerprint", "descriptor_dim"):
            if manifest["model"][key] != first["model"][key]:
                raise IndexMismatchError(
                    f"{shard.folder} was built with another model ({key} differs from "
                    f"{shards[0].folder}'s)."
                )
        if manifest["index"] != first["index"]:
            raise IndexMismatchError(
                f"{shard.folder} has other index settings than {shards[0].folder}."
            )
        if (manifest["shard"]["count"], manifest["shard"]["total"]) != (
            first["shard"]["count"],
            first["shard"]["total"],
        ):
            raise IndexMismatchError(f"{shard.folder} is a shard of another build.")
    numbers = sorted(s.manifest["shard"]["index"] for s in shards)
    expected = list(range(first["shard"]["count"]))
    if numbers != expected:
        missing = sorted(set(expected) - set(numbers))
        doubled = sorted({n for n in numbers if numbers.count(n) > 1})
        raise IndexMismatchError(
            f"Merging needs every shard 0..{expected[-1]} once. Missing: {missing}; given twice: "
            f"{doubled}."
        )
