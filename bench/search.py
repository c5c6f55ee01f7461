"""Vector-search benchmark: DuckDB exact cosine search against DuckDB's HNSW index (vss) and NumPy.

ceta2vec answers "segments similar to this one" with an exact scan (`ORDER BY
array_cosine_distance(...) LIMIT k`) and offers an HNSW index only as an opt-in. This benchmark
measures what that choice costs and what the index would buy, on synthetic embeddings shaped like
segment embeddings: 200-1000 Gaussian clusters (sqrt(N), clamped), points L2-normalised, compared
by cosine, stored in an in-memory DuckDB table as a fixed-size `FLOAT[D]` column.

For every N (rows) and D (dimension) it reports:

* load s: numpy -> Arrow FixedSizeList -> `CREATE TABLE ... AS SELECT` time;
* HNSW build s: `CREATE INDEX ... USING HNSW (vec) WITH (metric = 'cosine')`, default M /
  ef_construction; skipped when a lower-bound estimate from the previous size of the same D
  (build time x N / N_prev; HNSW builds grow at least linearly) exceeds --max-build-seconds, and
  killed when it runs past that budget;
* query latency p50 / p95 in ms, top-10 for each query vector (a perturbed dataset vector), for
  exact DuckDB (run before the index exists, so it cannot be rewritten into an index scan), DuckDB
  with the HNSW index (EXPLAIN must show HNSW_INDEX_SCAN; the plan is printed once), and a NumPy
  brute-force baseline (matrix-vector product + argpartition) over the same vectors. Both DuckDB
  variants run `ORDER BY array_cosine_distance(vec, getvariable('q')) LIMIT 10`, the variable set
  (untimed) from a table of query vectors; "list param" is, separately, what binding the vector
  from Python as a `?::FLOAT[D]` parameter costs per query, which that query shape would add;
* recall@10 of HNSW against exact, averaged over the queries;
* memory: peak RSS (ru_maxrss) of the process that ran the configuration, and the RSS growth
  (VmRSS deltas) caused by the table load and by the index build;
* the filtered-query problem: the same top-10 with `WHERE cluster_id % 10 = 0`, exact (no index)
  against the indexed table, with the recall and the number of rows the indexed table returned.
  vss applies such a filter after the index has picked its k candidates, so filtered answers from
  the index are short or wrong; this is why ceta2vec keeps exact search as the default.

Each configuration runs in its own child process, so that peak RSS is per configuration, memory
is returned between configurations, and an HNSW build that overruns its budget can be stopped
(DuckDB only honours an interrupt of CREATE INDEX at the end of a build phase, minutes late).
DuckDB runs in memory (the vss index would need experimental persistence in a file database);
its spill directory is a temporary directory, removed afterwards. Timings are wall clock and
depend on whatever else the machine is running.

Run:  .venv/bin/python bench/search.py  [--sizes 10000 100000 1000000] [--dims 256 768]
                                        [--queries 100] [--max-build-seconds 300] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import queue
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

K = 10
FILTER_SQL = "cluster_id % 10 = 0"
# Noise norms relative to the unit cluster centre: points sit at cosine ~0.75-0.93 from their
# centre (spread varies per cluster), queries at cosine ~0.98 from the dataset vector they copy.
CLUSTER_SPREAD = (0.4, 0.9)
QUERY_NOISE = 0.2
GEN_CHUNK_ROWS = 65_536
# Events a child prints on stdout; anything else there is passed through as progress.
EVENT_PREFIX = "@@bench "
# Time allowed for the HNSW queries after the build has finished, on top of the build budget.
QUERY_PHASE_GRACE_S = 600.0


# --- results ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Latency:
    p50_ms: float
    p95_ms: float

    @staticmethod
    def of(seconds: list[float]) -> Latency:
        ms = np.asarray(seconds) * 1e3
        return Latency(float(np.percentile(ms, 50)), float(np.percentile(ms, 95)))


LATENCY_FIELDS = ("exact", "hnsw", "numpy", "list_param", "exact_filtered", "hnsw_filtered")


@dataclass
class ConfigResult:
    """Everything measured for one (N, D); None where a stage did not run."""

    n: int
    d: int
    clusters: int = 0
    load_s: float | None = None
    build_s: float | None = None
    build_note: str = ""  # why there is no build time: skipped / timed out / failed
    exact: Latency | None = None
    hnsw: Latency | None = None
    numpy: Latency | None = None
    list_param: Latency | None = None  # binding a Python list as ?::FLOAT[D], no search
    recall: float | None = None
    numpy_vs_exact: float | None = None  # sanity check: should be 1.0
    exact_filtered: Latency | None = None
    hnsw_filtered: Latency | None = None
    filtered_recall: float | None = None
    filtered_rows: float | None = None  # mean rows the indexed table returned for a LIMIT 10
    filtered_uses_index: bool | None = None
    peak_rss_mb: float | None = None
    table_rss_mb: float | None = None
    index_rss_mb: float | None = None
    plan: str = ""  # operator tree of the HNSW query, printed once

    def update(self, values: dict[str, Any]) -> None:
        for key, value in values.items():
            if key in LATENCY_FIELDS and value is not None:
                value = Latency(**value)
            setattr(self, key, value)


# --- memory -------------------------------------------------------------------------------------


def vm_rss_mb(pid: int | str = "self", key: str = "VmRSS") -> float:
    """Current (VmRSS) or peak (VmHWM) resident set of a process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {key} in /proc/{pid}/status")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# --- data ---------------------------------------------------------------------------------------


def cluster_count(n: int) -> int:
    return int(min(1000, max(200, round(math.sqrt(n)))))


def clustered_vectors(n: int, d: int, clusters: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(n x d float32 unit vectors, cluster id per row); built in chunks so that 1M x 768 needs
    one 3 GB array and no float64 temporaries of that size."""
    centres = rng.standard_normal((clusters, d), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    spread = rng.uniform(*CLUSTER_SPREAD, size=clusters).astype(np.float32)
    labels = rng.integers(0, clusters, size=n, dtype=np.int32)
    vectors = np.empty((n, d), dtype=np.float32)
    for start in range(0, n, GEN_CHUNK_ROWS):
        rows = slice(start, min(n, start + GEN_CHUNK_ROWS))
        chunk_labels = labels[rows]
        # Noise of norm ~spread: N(0, 1/d) per coordinate.
        noise = rng.standard_normal((len(chunk_labels), d), dtype=np.float32)
        noise *= (spread[chunk_labels] / np.sqrt(np.float32(d)))[:, None]
        chunk = centres[chunk_labels] + noise
        chunk /= np.linalg.norm(chunk, axis=1, keepdims=True)
        vectors[rows] = chunk
    return vectors, labels


def query_vectors(vectors: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """Perturbed copies of random dataset rows: a query is near, but not equal to, a stored vector."""
    rows = rng.choice(len(vectors), size=count, replace=False)
    noise = rng.standard_normal((count, vectors.shape[1]), dtype=np.float32)
    noise *= QUERY_NOISE / np.sqrt(np.float32(vectors.shape[1]))
    queries = vectors[rows] + noise
    return queries / np.linalg.norm(queries, axis=1, keepdims=True)


# --- DuckDB -------------------------------------------------------------------------------------


def vss_extension_path() -> Path:
    """The vss extension inside the `duckdb-extension-vss` wheel: LOADed from disk, since the
    machine cannot INSTALL from the extension repository."""
    import duckdb_extension_vss

    found = sorted(Path(duckdb_extension_vss.__file__).parent.glob("extensions/**/*.duckdb_extension"))
    if not found:
        raise RuntimeError("duckdb-extension-vss is installed without a .duckdb_extension file")
    return found[-1]


def load_vss(conn: duckdb.DuckDBPyConnection) -> None:
    conn.execute(f"LOAD '{vss_extension_path()}'")


def load_table(conn: duckdb.DuckDBPyConnection, vectors: np.ndarray, labels: np.ndarray) -> None:
    """Create `emb(id BIGINT, cluster_id INTEGER, vec FLOAT[d])`; the Arrow arrays wrap the numpy
    buffers without copying, so DuckDB's copy is the only one made."""
    n, d = vectors.shape
    arrow_table = pa.table({
        "id": pa.array(np.arange(n, dtype=np.int64)),
        "cluster_id": pa.array(labels),
        "vec": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), d),
    })
    conn.register("arrow_source", arrow_table)
    try:
        conn.execute("CREATE TABLE emb AS SELECT * FROM arrow_source")
    finally:
        conn.unregister("arrow_source")
    column_type = conn.execute("SELECT data_type FROM duckdb_columns() WHERE table_name = 'emb' AND column_name = 'vec'").fetchone()[0]
    if column_type != f"FLOAT[{d}]":
        raise RuntimeError(f"vec loaded as {column_type}, expected FLOAT[{d}]")


def load_queries(conn: duckdb.DuckDBPyConnection, queries: np.ndarray) -> None:
    """Query vectors go into a DuckDB table and reach each query through a SQL variable: binding
    a Python list of D floats as a `?` parameter costs tens of ms per query by itself (measured
    separately as "list param"), which would swamp the search being measured. `getvariable` is
    folded to a constant at bind time, so the vss optimiser still sees a constant query vector."""
    arrow_table = pa.table({
        "qid": pa.array(np.arange(len(queries), dtype=np.int32)),
        "q": pa.FixedSizeListArray.from_arrays(pa.array(queries.reshape(-1)), queries.shape[1]),
    })
    conn.register("arrow_queries", arrow_table)
    try:
        conn.execute("CREATE TABLE queries AS SELECT * FROM arrow_queries")
    finally:
        conn.unregister("arrow_queries")


def set_query(conn: duckdb.DuckDBPyConnection, qid: int) -> None:
    conn.execute("SET VARIABLE q = (SELECT q FROM queries WHERE qid = ?)", [qid])


def top_k_sql(where: str | None = None) -> str:
    """The one query shape for both exact and HNSW: whether the index serves it depends only on
    whether the table has one."""
    return (f"SELECT id FROM emb {'WHERE ' + where if where else ''} "
            f"ORDER BY array_cosine_distance(vec, getvariable('q')) LIMIT {K}")


def plan_operators(conn: duckdb.DuckDBPyConnection, sql: str) -> str:
    """The physical plan as a compact operator tree (the text plan inlines the whole query vector)."""
    set_query(conn, 0)
    raw = conn.execute("EXPLAIN (FORMAT json) " + sql).fetchall()[0][1]

    def render(node: dict[str, Any]) -> str:
        children = [render(child) for child in node.get("children", [])]
        name = node["name"]
        if not children:
            return name
        if len(children) == 1:
            return f"{name} > {children[0]}"
        return f"{name} [{' | '.join(children)}]"

    return " ; ".join(render(node) for node in json.loads(raw))


def run_queries(conn: duckdb.DuckDBPyConnection, sql: str, query_count: int) -> tuple[list[list[int]], list[float]]:
    """(ids per query, seconds per query), after one untimed warm-up query."""
    set_query(conn, 0)
    conn.execute(sql).fetchall()
    results: list[list[int]] = []
    seconds: list[float] = []
    for qid in range(query_count):
        set_query(conn, qid)
        start = time.perf_counter()
        rows = conn.execute(sql).fetchall()
        seconds.append(time.perf_counter() - start)
        results.append([r[0] for r in rows])
    return results, seconds


def list_param_seconds(conn: duckdb.DuckDBPyConnection, queries: np.ndarray, samples: int = 20) -> list[float]:
    """What binding one query vector as a Python-list `?::FLOAT[D]` parameter costs, with no search:
    the overhead a `?`-parameter query shape adds to every latency below."""
    sql = f"SELECT ?::FLOAT[{queries.shape[1]}]"
    conn.execute(sql, [queries[0].tolist()]).fetchall()
    seconds: list[float] = []
    for q in queries[:samples]:
        start = time.perf_counter()
        conn.execute(sql, [q.tolist()]).fetchall()
        seconds.append(time.perf_counter() - start)
    return seconds


def numpy_top_k(vectors: np.ndarray, queries: np.ndarray) -> tuple[list[list[int]], list[float]]:
    """Brute force on unit vectors: cosine similarity is the dot product."""
    vectors @ queries[0]  # warm-up, as for DuckDB
    results: list[list[int]] = []
    seconds: list[float] = []
    for q in queries:
        start = time.perf_counter()
        scores = vectors @ q
        top = np.argpartition(-scores, K)[:K]
        top = top[np.argsort(-scores[top])]
        seconds.append(time.perf_counter() - start)
        results.append(top.tolist())
    return results, seconds


def mean_recall(found: list[list[int]], truth: list[list[int]]) -> float:
    """|found ∩ truth| / |truth| per query, averaged; a short answer counts its missing rows as misses."""
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth) if t]))


# --- one configuration, in a child process ------------------------------------------------------


def emit(**values: Any) -> None:
    """Report measurements to the parent as soon as they exist, so a killed child loses nothing."""
    print(EVENT_PREFIX + json.dumps(values, default=lambda o: asdict(o)), flush=True)


def progress(message: str) -> None:
    print(message, flush=True)


def run_config(n: int, d: int, query_count: int, build: bool, seed: int, spill_dir: str) -> None:
    rng = np.random.default_rng([seed, n, d])
    clusters = cluster_count(n)
    progress(f"  generating {n:,} x {d} ({clusters} clusters) ...")
    vectors, labels = clustered_vectors(n, d, clusters, rng)
    queries = query_vectors(vectors, query_count, rng)
    emit(clusters=clusters)

    conn = duckdb.connect(":memory:", config={"temp_directory": spill_dir})
    load_vss(conn)
    rss_before = vm_rss_mb()
    start = time.perf_counter()
    load_table(conn, vectors, labels)
    emit(load_s=time.perf_counter() - start, table_rss_mb=vm_rss_mb() - rss_before, peak_rss_mb=peak_rss_mb())

    # Exact search first, while the table has no index: nothing can turn these into index scans.
    load_queries(conn, queries)
    exact_sql, filtered_sql = top_k_sql(), top_k_sql(FILTER_SQL)
    if "HNSW_INDEX_SCAN" in plan_operators(conn, exact_sql):
        raise RuntimeError("exact query planned as an HNSW scan on a table without an index")
    progress(f"  exact queries ({query_count}, unfiltered and filtered) ...")
    exact_ids, exact_s = run_queries(conn, exact_sql, query_count)
    exact_filtered_ids, exact_filtered_s = run_queries(conn, filtered_sql, query_count)
    progress("  numpy queries ...")
    numpy_ids, numpy_s = numpy_top_k(vectors, queries)
    emit(exact=Latency.of(exact_s), exact_filtered=Latency.of(exact_filtered_s), numpy=Latency.of(numpy_s),
         list_param=Latency.of(list_param_seconds(conn, queries)),
         numpy_vs_exact=mean_recall(numpy_ids, exact_ids), peak_rss_mb=peak_rss_mb())
    if not build:
        return

    progress("  building HNSW index ...")
    emit(build_started=True)
    rss_before = vm_rss_mb()
    start = time.perf_counter()
    conn.execute("CREATE INDEX emb_hnsw ON emb USING HNSW (vec) WITH (metric = 'cosine')")
    emit(build_s=time.perf_counter() - start, index_rss_mb=vm_rss_mb() - rss_before, peak_rss_mb=peak_rss_mb())

    plan = plan_operators(conn, exact_sql)
    if "HNSW_INDEX_SCAN" not in plan:
        raise RuntimeError(f"the indexed table's top-{K} query does not use the index: {plan}")
    progress(f"  HNSW queries ({query_count}, unfiltered and filtered) ...")
    hnsw_ids, hnsw_s = run_queries(conn, exact_sql, query_count)
    hnsw_filtered_ids, hnsw_filtered_s = run_queries(conn, filtered_sql, query_count)
    filtered_plan = plan_operators(conn, filtered_sql)
    emit(plan=plan, hnsw=Latency.of(hnsw_s), recall=mean_recall(hnsw_ids, exact_ids),
         hnsw_filtered=Latency.of(hnsw_filtered_s), filtered_recall=mean_recall(hnsw_filtered_ids, exact_filtered_ids),
         filtered_rows=float(np.mean([len(r) for r in hnsw_filtered_ids])),
         filtered_uses_index="HNSW_INDEX_SCAN" in filtered_plan, peak_rss_mb=peak_rss_mb())


# --- parent: one child per configuration, with the build budget enforced ------------------------


@dataclass
class BuildHistory:
    """Last HNSW build attempted for one D: what the next size's estimate is based on."""

    n: int
    seconds: float  # the budget, for a build that was killed: still a lower bound


def build_estimate(history: BuildHistory | None, n: int) -> float | None:
    """Lower bound on the build time at n rows (HNSW inserts cost at least as much as the graph grows)."""
    if history is None:
        return None
    return history.seconds * n / history.n


def run_child(result: ConfigResult, query_count: int, build: bool, seed: int, budget_s: float, spill_dir: str) -> None:
    """Run one configuration in a child process, filling `result` from its events; kill it if
    the HNSW build overruns `budget_s`."""
    spec = json.dumps({"n": result.n, "d": result.d, "query_count": query_count, "build": build, "seed": seed,
                       "spill_dir": spill_dir})
    child = subprocess.Popen([sys.executable, __file__, "--child", spec], stdout=subprocess.PIPE, text=True)
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert child.stdout is not None
        for line in child.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    deadline: float | None = None
    while True:
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            line = lines.get(timeout=timeout)
        except queue.Empty:
            # Only the child we started, by its own handle; read its peak memory first.
            try:
                result.peak_rss_mb = vm_rss_mb(child.pid, "VmHWM")
            except (OSError, RuntimeError):
                pass  # it exited just now; keep the last peak it reported
            child.kill()
            child.wait()
            if result.build_s is None:
                result.build_note = f"killed: > {budget_s:.0f} s"
            else:
                result.build_note = "killed during HNSW queries"
            return
        if line is None:
            break
        if not line.startswith(EVENT_PREFIX):
            print(line, end="", file=sys.stderr, flush=True)
            continue
        event = json.loads(line[len(EVENT_PREFIX):])
        if event.pop("build_started", False):
            deadline = time.monotonic() + budget_s
        if "build_s" in event:
            deadline = time.monotonic() + QUERY_PHASE_GRACE_S
        result.update(event)
    if child.wait() != 0:
        result.build_note = result.build_note or f"child failed (exit {child.returncode})"


# --- report -------------------------------------------------------------------------------------


def fmt(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def fmt_latency(latency: Latency | None) -> str:
    return "-" if latency is None else f"{latency.p50_ms:.2f} / {latency.p95_ms:.2f}"


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    print("  ".join(h.rjust(w) for h, w in zip(headers, widths)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(c.rjust(w) for c, w in zip(row, widths)))


def report(results: list[ConfigResult], args: argparse.Namespace) -> None:
    print()
    print(f"ceta2vec vector-search benchmark: top-{K} by cosine, {args.queries} queries per configuration, "
          f"in-memory DuckDB {duckdb.__version__} ({os.cpu_count()} CPUs), HNSW build budget {args.max_build_seconds:.0f} s")
    print("latencies are p50 / p95 ms (DuckDB: query vector from a SQL variable); recall@10 is HNSW against exact; "
          "peak RSS is the configuration's process (numpy copy + DuckDB table + index); +table / +index are VmRSS growth "
          "from the load / the build; list param is binding the vector as a Python-list ?::FLOAT[D] parameter, no search")
    print()
    print_table(
        ["N", "D", "load s", "HNSW build s", "exact ms", "HNSW ms", "numpy ms", "recall@10", "peak RSS MB",
         "+table MB", "+index MB", "list param ms"],
        [[f"{r.n:,}", str(r.d), fmt(r.load_s, ".2f"), fmt(r.build_s) if r.build_s is not None else r.build_note or "-",
          fmt_latency(r.exact), fmt_latency(r.hnsw), fmt_latency(r.numpy), fmt(r.recall, ".3f"), fmt(r.peak_rss_mb, ".0f"),
          fmt(r.table_rss_mb, ".0f"), fmt(r.index_rss_mb, ".0f"), fmt_latency(r.list_param)] for r in results],
    )
    print()
    print(f"filtered top-{K} (WHERE {FILTER_SQL}, ~10% of rows): exact on the table without the index vs the same "
          "query on the indexed table")
    print_table(
        ["N", "D", "exact ms", "indexed-table ms", "index used", "rows returned", f"recall@{K}"],
        [[f"{r.n:,}", str(r.d), fmt_latency(r.exact_filtered), fmt_latency(r.hnsw_filtered),
          "-" if r.filtered_uses_index is None else ("yes" if r.filtered_uses_index else "no"),
          fmt(r.filtered_rows, ".2f"), fmt(r.filtered_recall, ".3f")] for r in results],
    )
    plan = next((r.plan for r in results if r.plan), "")
    if plan:
        print()
        print(f"EXPLAIN of the unfiltered top-{K} on the indexed table (operators): {plan}")
    disagreements = [r for r in results if r.numpy_vs_exact is not None and r.numpy_vs_exact < 0.999]
    for r in disagreements:
        print(f"WARNING: numpy and exact DuckDB top-{K} agree only {r.numpy_vs_exact:.3f} at N={r.n:,} D={r.d}")
    if not disagreements:
        print(f"check: numpy brute force and exact DuckDB returned the same top-{K} in every configuration")


# --- main ---------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000], help="rows (N)")
    parser.add_argument("--dims", type=int, nargs="+", default=[256, 768], help="vector dimensions (D)")
    parser.add_argument("--queries", type=int, default=100, help="query vectors per configuration")
    parser.add_argument("--max-build-seconds", type=float, default=300.0,
                        help="HNSW build budget per configuration: skipped when estimated above it, killed past it")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", metavar="JSON", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.queries < 2 or min(args.sizes) <= args.queries or min(args.sizes) <= K:
        parser.error("need 2 <= --queries < every size, and sizes above 10")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        run_config(**json.loads(args.child))
        return 0

    results: list[ConfigResult] = []
    history: dict[int, BuildHistory] = {}
    spill_dir = tempfile.mkdtemp(prefix="ceta2vec-bench-search-")
    started = time.perf_counter()
    try:
        for n in sorted(args.sizes):
            for d in args.dims:
                result = ConfigResult(n=n, d=d)
                estimate = build_estimate(history.get(d), n)
                build = estimate is None or estimate <= args.max_build_seconds
                if not build:
                    result.build_note = f"skipped: est. >= {estimate:.0f} s"
                print(f"N={n:,} D={d}" + ("" if build else f" (HNSW {result.build_note})"), file=sys.stderr, flush=True)
                run_child(result, args.queries, build, args.seed, args.max_build_seconds, spill_dir)
                if result.build_s is not None:
                    history[d] = BuildHistory(n, result.build_s)
                elif result.build_note.startswith("killed: >"):
                    history[d] = BuildHistory(n, args.max_build_seconds)
                results.append(result)
    finally:
        shutil.rmtree(spill_dir, ignore_errors=True)
    report(results, args)
    print(f"\ntotal wall time {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
