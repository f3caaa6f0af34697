"""`IndexConfig`: which faiss index to build and how to search it, as one object that travels.

Pure Python (no faiss import), so that the commands build their index flags from it at start-up;
`sare_tf.index.faiss_search` turns it into an index.
"""

from __future__ import annotations

import dataclasses
import math

from sare_tf.config_options import option

INDEX_TYPES = ("flat", "ivfpq", "hnsw")


@dataclasses.dataclass(frozen=True)
class IndexConfig:
    """How to build a faiss index (see `sare_tf.index.faiss_search` for what each kind does).

    The fields with a flag are the `--index-type`, `--nlist`, ... flags of `sare-tf evaluate`
    and `sare-tf index build` (`sare_tf.config_options`).

    Attributes:
        kind: "flat", "ivfpq" or "hnsw".
        nlist: IVF cells; None picks ~4 sqrt(N) (power of two, at least 39 training points each).
        m: PQ sub-quantizers; None picks D / 8 capped at 64 (a divisor of D).
        nbits: bits per PQ code.
        nprobe: IVF cells visited per query.
        refine_factor: exact re-ranking of `k * refine_factor` candidates (0: off).
        opq: learn an OPQ rotation before IVF-PQ ("ivfpq" only).
        hnsw_m: HNSW graph degree.
        ef_construction: HNSW build-time beam.
        ef_search: HNSW query-time beam.
        max_train_points: training sample for IVF-PQ (k-means and codebooks).
        seed: sampling seed for training.
    """

    kind: str = option(
        "flat", "faiss index: exact 'flat', compressed 'ivfpq', graph 'hnsw'",
        group="faiss index", flag="--index-type", choices=INDEX_TYPES,
    )  # fmt: skip
    nlist: int | None = option(None, "IVF-PQ cells (default ~4 sqrt(N))", group="faiss index")
    m: int | None = option(
        None, "IVF-PQ sub-quantizers, divides D (default D/8, <=64)", group="faiss index",
        flag="--pq-m",
    )  # fmt: skip
    nbits: int = option(8, "IVF-PQ bits per code", group="faiss index")
    nprobe: int = option(32, "IVF-PQ cells searched", group="faiss index")
    refine_factor: int = option(
        0, "IVF-PQ: re-rank k x this many candidates with exact vectors (0: off)",
        group="faiss index",
    )  # fmt: skip
    opq: bool = option(
        False, "IVF-PQ: learn an OPQ rotation first (same memory; ~1 point more Recall@1 in our "
        "benchmark at m=32, 6-9x slower to build; needs >= D database images)",
        group="faiss index", switch="on",
    )  # fmt: skip
    hnsw_m: int = 32
    ef_construction: int = 80
    ef_search: int = option(128, "HNSW search beam", group="faiss index")
    max_train_points: int = 100_000
    seed: int = 0

    def __post_init__(self):
        if self.kind not in INDEX_TYPES:
            raise ValueError(
                f"Unknown index type. Expected one of {INDEX_TYPES}. Received: index={self.kind!r}"
            )
        for name in ("nbits", "nprobe", "hnsw_m", "ef_construction", "ef_search"):
            if int(getattr(self, name)) < 1:
                raise ValueError(
                    f"`{name}` must be a positive integer. Received: {name}={getattr(self, name)}"
                )
        if self.refine_factor < 0:
            raise ValueError(
                f"`refine_factor` must be >= 0. Received: refine_factor={self.refine_factor}"
            )
        if self.opq and self.kind != "ivfpq":
            raise ValueError(
                f"`opq` applies to index='ivfpq' only. Received: index={self.kind!r}, opq=True"
            )

    def factory_string(self, dim: int, num_db: int) -> str:
        """The `faiss.index_factory` description of this index for `num_db` vectors of `dim`.

        "Flat" (inner product), "HNSW<M>,Flat", or "[OPQ<m>,]IVF<nlist>,PQ<m>x<nbits>np[,RFlat]"
        (L2; "np": no polysemous training, which only reorders codes for Hamming search).
        """
        if self.kind == "flat":
            return "Flat"
        if self.kind == "hnsw":
            return f"HNSW{self.hnsw_m},Flat"
        nlist = self.nlist or default_nlist(num_db)
        m = self.m or default_pq_m(dim)
        description = f"IVF{nlist},PQ{m}x{self.nbits}np"
        if self.opq:
            description = f"OPQ{m},{description}"
        return f"{description},RFlat" if self.refine_factor else description

    def settings(self) -> dict:
        """The fields that apply to this kind of index (what a report records beside `kind`)."""
        if self.kind == "ivfpq":
            names = ("nlist", "m", "nbits", "nprobe", "refine_factor", "opq")
        elif self.kind == "hnsw":
            names = ("hnsw_m", "ef_construction", "ef_search")
        else:
            names = ()
        return {name: getattr(self, name) for name in names}

    def build_parameters(self) -> dict:
        """`faiss.ParameterSpace` settings needed before the index is filled."""
        return {"efConstruction": self.ef_construction} if self.kind == "hnsw" else {}

    def search_parameters(self, num_db: int) -> dict:
        """`faiss.ParameterSpace` settings of the searches."""
        if self.kind == "hnsw":
            return {"efSearch": self.ef_search}
        if self.kind == "flat":
            return {}
        parameters = {"nprobe": min(self.nprobe, self.nlist or default_nlist(num_db))}
        if self.refine_factor:
            parameters["k_factor_rf"] = self.refine_factor
        return parameters


def as_index_config(index: str | IndexConfig = "flat", **params) -> IndexConfig:
    """Turns an index name plus keyword parameters (or an `IndexConfig`) into an `IndexConfig`."""
    if isinstance(index, IndexConfig):
        return dataclasses.replace(index, **params) if params else index
    unknown = set(params) - {f.name for f in dataclasses.fields(IndexConfig)}
    if unknown:
        raise ValueError(f"Unknown index parameters. Received: {sorted(unknown)}")
    params = {key: value for key, value in params.items() if value is not None}
    return IndexConfig(kind=index, **params)


def default_nlist(num_db: int) -> int:
    """~4 sqrt(N) rounded to a power of two, with at least 39 database points per cell."""
    target = 4 * math.sqrt(max(num_db, 1))
    nlist = 2 ** max(0, round(math.log2(target)))
    return int(max(1, min(nlist, num_db // 39)))


def default_pq_m(dim: int) -> int:
    """The largest divisor of `dim` not above min(64, dim / 8) (faiss needs m | D).

    Sub-vectors of at least 8 dimensions: faiss trains 2-4-d sub-quantizers very slowly.
    """
    target = max(1, min(64, dim // 8))
    for m in range(target, 0, -1):
        if dim % m == 0:
            return m
    return 1
