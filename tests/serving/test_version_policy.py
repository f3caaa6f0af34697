"""Pure parts of serving: TF Serving's version policies, labels, URL forms, load bounds."""

from __future__ import annotations

import asyncio

import pytest

from sare_tf.serving.admission import Admission, Overloaded
from sare_tf.serving.protocol import ModelPath, parse_model_path
from sare_tf.serving.servables import public_paths
from sare_tf.serving.version_policy import VersionPolicy, parse_labels


@pytest.mark.parametrize(
    "policy, available, expected",
    [
        (VersionPolicy(), [3, 1, 2], [3]),
        (VersionPolicy("latest", num_versions=2), [1, 2, 5], [2, 5]),
        (VersionPolicy("latest", num_versions=4), [1, 2], [1, 2]),
        (VersionPolicy("specific", versions=(1, 3)), [1, 2, 3, 4], [1, 3]),
        (VersionPolicy("specific", versions=(7,)), [1, 2], []),
        (VersionPolicy("all"), [2, 1], [1, 2]),
    ],
)
def test_version_policies_select_as_tf_serving_does(policy, available, expected):
    assert policy.select(available) == expected


def test_bad_policies_and_labels_are_refused_with_the_flag_named():
    with pytest.raises(ValueError, match="--num-versions"):
        VersionPolicy("latest", num_versions=0)
    with pytest.raises(ValueError, match="--versions"):
        VersionPolicy("specific")
    with pytest.raises(ValueError, match="--version-policy"):
        VersionPolicy("newest")
    assert parse_labels(["stable=1", "canary=2"]) == {"stable": 1, "canary": 2}
    for bad in (["stable"], ["stable=x"], ["=1"], ["a b=1"], ["s=1", "s=2"]):
        with pytest.raises(ValueError):
            parse_labels(bad)


@pytest.mark.parametrize(
    "path, expected",
    [
        ("city", ModelPath("city")),
        ("city:predict", ModelPath("city", verb="predict")),
        ("city/versions/12:predict", ModelPath("city", version=12, verb="predict")),
        ("city/labels/stable:classify", ModelPath("city", label="stable", verb="classify")),
        ("city/versions/3/metadata", ModelPath("city", version=3, metadata=True)),
        ("city-localize/metadata", ModelPath("city-localize", metadata=True)),
    ],
)
def test_model_paths_parse_every_tf_serving_form(path, expected):
    assert parse_model_path(path) == expected


@pytest.mark.parametrize("path", ["", "city/versions/x", "city/versions/1/2", "city/other"])
def test_malformed_model_paths_are_refused(path):
    with pytest.raises(LookupError, match="Malformed"):
        parse_model_path(path)


def test_admission_admits_up_to_its_bounds_then_refuses_at_once_or_after_the_timeout():
    async def scenario():
        admission = Admission(max_in_flight=2, max_queued=1, queue_timeout_s=0.05)
        release = asyncio.Event()
        outcomes = []

        async def request():
            try:
                async with admission.slot():
                    await release.wait()
                outcomes.append("done")
            except Overloaded as error:
                outcomes.append(str(error))

        tasks = [asyncio.create_task(request()) for _ in range(4)]
        await asyncio.sleep(0.01)
        # 2 in flight, 1 waiting, the 4th refused at once (queue full).
        assert (admission.in_flight, admission.queued) == (2, 1)
        assert admission.stats["refused_queue_full"] == 1
        await asyncio.sleep(0.1)  # the waiting one times out
        assert admission.stats["refused_timeout"] == 1 and admission.queued == 0
        release.set()
        await asyncio.gather(*tasks)
        assert outcomes.count("done") == 2 and admission.in_flight == 0
        async with admission.slot():  # free again
            assert admission.in_flight == 1

    asyncio.run(scenario())


def test_public_paths_hide_the_servers_folders():
    paths = ["/srv/data/city/db/a.jpg", "/srv/data/city/db/sub/b.jpg", "/srv/data/city/q/c.jpg"]
    assert public_paths(paths) == ["db/a.jpg", "db/sub/b.jpg", "q/c.jpg"]
    assert public_paths(["db/a.jpg"]) == ["db/a.jpg"]
    assert public_paths(["/x/one.jpg"]) == ["one.jpg"]
