"""A study read from one S3 bucket and stored in another equals the same study on disk, even
through a proxy that fails a share of the requests (slow).

The S3 API is moto's server on 127.0.0.1; credentials come from the environment and
must never appear in the logs, the store or the report.
"""

from __future__ import annotations

import pandas as pd
import pytest
import ray

from citylens.config import load_config
from citylens.pipeline.cluster import start_local
from citylens.pipeline.run import STAGES, run_study
from citylens.storage import Store

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]


@pytest.fixture(scope="module")
def s3_ray(s3_server):
    # started after the server fixture has put the credentials in the environment:
    # the workers inherit them, as they would an instance role on a cloud node
    start_local(num_cpus=2, include_dashboard=False, object_store_memory=300 * 2**20)
    yield ray._private.worker._global_node.get_session_dir_path()
    ray.shutdown()


def test_study_on_s3_equals_the_study_on_disk_and_leaks_no_secret(
    tiny_study, s3_server, flaky_s3, s3_ray, three_cities, tiny, capfd
):
    cities = s3_server.bucket("city-photos")
    studies = s3_server.bucket("citylens-studies")
    for city in ("towerville", "signburg"):
        s3_server.upload(three_cities / city, f"{cities}/{city}")
        s3_server.upload(three_cities / "labels" / city, f"{cities}/labels/{city}")
    # every request of the study goes through a proxy failing 5 % of them (503, 500,
    # dropped connections, lost answers): retried, nothing lost, tables equal
    flaky_s3.rate = 0.05
    endpoint = f"run.storage_options.endpoint_url={flaky_s3.endpoint}"
    messages: list[str] = []
    on_s3 = load_config(None, [*tiny.overrides(f"{studies}/tiny", cities), endpoint])
    results = run_study(on_s3, progress=messages.append)
    assert [r.status for r in results] == ["ran"] * len(STAGES)

    assert all(n > 0 for n in flaky_s3.faults.values()), flaky_s3.faults
    s3_store = Store(f"{studies}/tiny", s3_server.options)
    disk_store = Store(str(tiny_study))  # the same study on disk, run once a session
    manifest = s3_store.read_table(f"{s3_store.record('ingest')['folder']}/manifest.parquet")
    assert all(u.startswith("s3://city-photos/") for u in manifest["uri"].to_pylist())
    assert s3_store.exists("models/simpler-s1/model.pt") and s3_store.exists("report.html")
    got, want = tiny.tables(s3_store), tiny.tables(disk_store)
    assert set(got) == set(want) >= {"ar_pairs.parquet", "objects.parquet", "embeddings.parquet"}
    for name in want:
        # probabilities (the causal tables) agree to 1e-6 absolute: batches differ by run
        pd.testing.assert_frame_equal(
            got[name], want[name], check_exact=False, rtol=1e-6, atol=1e-6
        )

    # the secret is in this process's environment and nowhere else
    secret = s3_server.secret.encode()
    assert s3_server.grep(studies, secret) == []
    assert not any(s3_server.secret in m for m in messages)
    out, err = capfd.readouterr()
    assert s3_server.secret not in out + err
    import pathlib

    leaked = [
        str(p)
        for p in pathlib.Path(s3_ray, "logs").rglob("*")
        if p.is_file() and secret in p.read_bytes()
    ]
    assert leaked == []
