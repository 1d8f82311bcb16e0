"""The API over a real server (``python -m core serve``, uvicorn) on a free port, driven with httpx: keys, answers
with the app's numbers, every refusal a 4xx with a sentence, batching across concurrent clients, and a server that
stays up whatever it is sent."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import encoded, jpeg_bytes, photo, run_cli
from live_server import live_server
from PIL import Image


@pytest.fixture(scope="module")
def server(tmp_path_factory, trained_run):
    yield from live_server(tmp_path_factory, trained_run)


def post(url: str, **kwargs) -> httpx.Response:
    """A POST that waits for a model's first load (TensorFlow, on a machine that may be busy)."""
    return httpx.post(url, **{"timeout": 120, **kwargs})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_refused(resp: httpx.Response, status: int, needle: str) -> None:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    detail = resp.json()["detail"]
    assert isinstance(detail, str) and needle in detail, detail
    assert "Traceback" not in resp.text


def predict_url(server, run_id: str) -> str:
    return f"{server.api}/runs/{run_id}/predict"


def test_health_openapi_and_docs_need_no_key_and_the_pages_share_the_port(server):
    health = httpx.get(f"{server.api}/health").json()
    assert health["status"] == "ok"
    schema = httpx.get(f"{server.api}/openapi.json").json()
    assert {"/runs/{run_id}/predict", "/runs/{run_id}", "/health"} <= set(schema["paths"])
    body = schema["paths"]["/runs/{run_id}/predict"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "application/json"} <= set(body)
    docs = httpx.get(f"{server.api}/docs")
    assert docs.status_code == 200 and "/api/v1/openapi.json" in docs.text
    assert httpx.get(f"{server.url}/_stcore/health").text == "ok"  # the pages' server is the same one
    assert httpx.get(server.url).status_code == 200
    assert_refused(httpx.get(f"{server.api}/nothing-here"), 404, "no such address")


def test_keys_401_403_and_404(server, trained_run):
    run_id = trained_run.name
    url = f"{server.api}/runs/{run_id}"
    no_key = httpx.get(url)
    assert_refused(no_key, 401, "needs an API key")
    assert no_key.headers["www-authenticate"] == "Bearer"
    assert_refused(httpx.get(url, headers=bearer("ick_0000000000_guess")), 401, "not known to this server")
    token = server.key(run_id)
    assert_refused(
        httpx.get(f"{server.api}/runs/someone-elses", headers=bearer(token)), 403, f"only use the run {run_id}"
    )
    with server.in_workspace():
        from core.workspace import access, keys

        revoked, revoked_token = keys.create(run_id, access.OPERATOR, "old")
        keys.revoke(revoked.id, access.OPERATOR)
        expired, expired_token = keys.create(run_id, access.OPERATOR, "short", expires_days=1)
        con = sqlite3.connect(server.base / "work" / "workspace.db")
        con.execute("UPDATE api_keys SET expires = ? WHERE id = ?", (time.time() - 5, expired.id))
        con.commit()
        con.close()
    assert_refused(httpx.get(url, headers=bearer(revoked_token)), 403, "was revoked")
    assert_refused(httpx.get(url, headers=bearer(expired_token)), 403, "has expired")
    all_runs = server.key(run_id, all_runs=True)
    assert_refused(httpx.get(f"{server.api}/runs/gone", headers=bearer(all_runs)), 404, "There is no run 'gone'")
    info = httpx.get(url, headers=bearer(token)).json()
    assert info["run"] == run_id and info["classes"] == ["blue", "green", "red"] and info["image_size"] == 32
    assert info["card"] == f"/api/v1/runs/{run_id}/card"
    assert info["none_of_these_threshold"] is None and info["none_of_these_rate"] is None  # 3 validation images
    card = httpx.get(f"{server.url}{info['card']}", headers=bearer(token))
    assert card.status_code == 200 and card.text.startswith("# Model card")
    with server.in_workspace():
        used = keys.get(token.split("_")[1])
    assert used.uses == 2 and used.last_used is not None  # run info and card: both counted


def test_predict_answers_each_image_and_a_bad_one_gets_its_own_error(server, trained_run):
    token = server.key(trained_run.name)
    files = [
        ("files", ("red.jpg", jpeg_bytes((210, 40, 40)), "image/jpeg")),
        ("files", ("broken.jpg", b"\xff\xd8\xff not really a jpeg", "image/jpeg")),
        ("files", ("blue.png", encoded(photo(3)), "image/png")),
    ]
    resp = post(predict_url(server, trained_run.name), files=files, headers=bearer(token), timeout=120)
    assert resp.status_code == 200, resp.text
    out = resp.json()
    assert out["run"] == trained_run.name and [p["file"] for p in out["predictions"]] == [
        "red.jpg",
        "broken.jpg",
        "blue.png",
    ]
    good, bad, other = out["predictions"]
    assert bad["error"] and bad["label"] is None and bad["probabilities"] == {}
    for p in (good, other):
        assert p["error"] is None and p["none_of_these"] is None and isinstance(p["not_sure"], bool)
        assert set(p["probabilities"]) == {"blue", "green", "red"}
        assert abs(sum(p["probabilities"].values()) - 1) < 1e-5
        assert p["label"] == max(p["probabilities"], key=p["probabilities"].get)
    assert out["stored"] == 0 and out["store_note"] is None


def test_json_base64_gives_the_same_answers_as_multipart(server, trained_run):
    token = server.key(trained_run.name)
    data = jpeg_bytes((40, 190, 60), seed=4)
    multi = post(predict_url(server, trained_run.name), files=[("files", ("g.jpg", data))], headers=bearer(token))
    as_json = post(
        predict_url(server, trained_run.name),
        json={"images": [{"name": "g.jpg", "data": base64.b64encode(data).decode()}, base64.b64encode(data).decode()]},
        headers=bearer(token),
    )
    assert multi.status_code == as_json.status_code == 200, as_json.text
    first, second = as_json.json()["predictions"]
    alone = multi.json()["predictions"][0]
    # The same image in a batch of one and of two: oneDNN may sum in another order (AVX-512 kernels), so ~1e-8 apart.
    assert {k: v for k, v in first.items() if k != "probabilities"} == {k: v for k, v in alone.items()
                                                                          if k != "probabilities"}  # fmt: skip
    assert first["probabilities"] == pytest.approx(alone["probabilities"], abs=1e-6)
    assert second["file"] == "image 2"
    assert second["probabilities"] == pytest.approx(first["probabilities"], abs=1e-6)


def test_the_apis_probabilities_are_core_predicts_on_the_validation_images(server, trained_run, tmp_path):
    split = json.loads((trained_run / "split.json").read_text())
    images = [tmp_path / f"{i}.jpg" for i in range(len(split["val"]))]
    for i, path in enumerate(images):  # the validation images' content, rebuilt exactly (class_entries' colours)
        path.write_bytes(_entry_bytes(split["val"][i]))
    token = server.key(trained_run.name)
    files = [("files", (p.name, p.read_bytes())) for p in images]
    api = post(predict_url(server, trained_run.name), files=files, headers=bearer(token), timeout=120).json()
    cli = run_cli("predict", trained_run, *images, "--json", "--top-k", "3", env_dir=tmp_path)
    assert cli.returncode == 0, cli.stderr
    for mine, theirs in zip(api["predictions"], json.loads(cli.stdout), strict=True):
        assert mine["label"] == theirs["predictions"][0]["class"]
        for t in theirs["predictions"]:  # all three classes (--top-k 3), rounded to 6 digits by the CLI
            assert abs(mine["probabilities"][t["class"]] - t["probability"]) <= 1e-5


def _entry_bytes(rel: str) -> bytes:
    from conftest import class_entries

    return class_entries(classes=("red", "green", "blue"), per_class=10)[rel]


def test_limits_are_4xx_sentences_and_the_server_stays_up(server, trained_run):
    url, token = predict_url(server, trained_run.name), server.key(trained_run.name)
    h = bearer(token)
    assert_refused(post(url, content=b"hello", headers={**h, "content-type": "text/plain"}), 415, "multipart")
    assert_refused(post(url, headers=h, files={"other": ("a.jpg", b"x")}), 422, "no image")
    assert_refused(post(url, headers={**h, "content-type": "application/json"}, content=b"{nope"), 422, "JSON")
    assert_refused(post(url, headers=h, json={"images": ["***"]}), 422, "base64")
    assert_refused(post(url, headers=h, json={"pictures": []}), 422, '{"images"')
    assert_refused(post(url, headers=h, files=[("files", (None, b"text, not a file"))]), 422, "image files")
    form = post(url, headers=h, data={"files": "a form, not files"})
    assert_refused(form, 415, "multipart/form-data")
    seven = [("files", (f"{i}.jpg", jpeg_bytes(seed=i))) for i in range(7)]
    assert_refused(post(url, headers=h, files=seven), 413, "at most 6 images")
    big = np.random.default_rng(0).integers(0, 255, (700, 700, 3), np.uint8)
    huge = encoded(Image.fromarray(big), "PNG")  # ~1.4 MB: over the 1 MB body limit
    assert_refused(post(url, headers=h, files=[("files", ("big.png", huge))]), 413, "larger than this server takes")

    def chunks():  # no Content-Length: stopped as the bytes arrive
        yield b'--b\r\nContent-Disposition: form-data; name="files"; filename="x.png"\r\n\r\n'
        for _ in range(20):
            yield b"\0" * 100_000

    chunked = post(url, headers={**h, "content-type": "multipart/form-data; boundary=b"}, content=chunks())
    assert_refused(chunked, 413, "larger than this server takes")
    broken = post(url, headers={**h, "content-type": "multipart/form-data; boundary=zz"}, content=b"--zz\r\ngarbage")
    assert 400 <= broken.status_code < 500 and "detail" in broken.json()
    wide = io.BytesIO()
    Image.new("RGB", (1200, 1000), (9, 9, 9)).save(wide, "PNG")  # 1.2 MP: over the server's 1 MP
    resp = post(url, headers=h, files=[("files", ("wide.png", wide.getvalue())), ("files", ("ok.jpg", jpeg_bytes()))])
    assert resp.status_code == 200
    wide_answer, ok = resp.json()["predictions"]
    assert "pixels" in wide_answer["error"] and ok["error"] is None
    assert server.alive() and httpx.get(f"{server.api}/health").status_code == 200


def test_a_key_over_its_images_a_minute_gets_429_with_retry_after(server, trained_run):
    url, token, other = (
        predict_url(server, trained_run.name),
        server.key(trained_run.name),
        server.key(trained_run.name),
    )
    six = [("files", (f"{i}.jpg", jpeg_bytes(seed=i))) for i in range(6)]
    answered = [post(url, headers=bearer(token), files=six, timeout=120).status_code for _ in range(6)]
    assert answered == [200] * 6  # 36 of its 40 images this minute
    over = post(url, headers=bearer(token), files=six)
    assert_refused(over, 429, "40 images for this minute")
    assert 1 <= int(over.headers["retry-after"]) <= 60
    assert post(url, headers=bearer(other), files=six[:1]).status_code == 200  # a limit per key


def test_concurrent_clients_are_answered_in_shared_batches(server, trained_run):
    tokens = [server.key(trained_run.name) for _ in range(8)]
    before = httpx.get(f"{server.api}/health").json()

    async def client(token: str, seed: int) -> list[dict]:
        async with httpx.AsyncClient(timeout=120) as c:
            answers = []
            for i in range(3):
                r = await c.post(predict_url(server, trained_run.name), headers=bearer(token),
                                 files=[("files", (f"{seed}-{i}.jpg", jpeg_bytes(seed=seed * 10 + i)))])  # fmt: skip
                assert r.status_code == 200, r.text
                answers += r.json()["predictions"]
            return answers

    async def everyone():
        return await asyncio.gather(*(client(t, s) for s, t in enumerate(tokens)))

    results = asyncio.run(everyone())
    assert all(len(r) == 3 and all(p["error"] is None for p in r) for r in results)
    after = httpx.get(f"{server.api}/health").json()
    images, batches = after["images"] - before["images"], after["batches"] - before["batches"]
    assert images == 24 and batches < images  # some forward passes served several clients at once


def test_a_key_that_stores_predictions_fills_its_datasets_review_queue_up_to_its_cap(server, trained_run, tmp_path):
    from conftest import class_entries, make_zip

    from core.workspace import datasets, review
    from core.workspace.runs import MARKER, read_json, write_json

    with server.in_workspace():
        saved = datasets.save_zip(make_zip(tmp_path / "colours.zip", class_entries(classes=("red", "green", "blue"))))
        run = shutil.copytree(trained_run, server.base / "runs" / "20200101-000000-kept-abcd")
        write_json(run / MARKER, {**read_json(run / MARKER), "dataset_id": saved.id})
    keeping, plain = server.key(run.name, store=True), server.key(run.name)
    url = predict_url(server, run.name)
    two = [
        ("files", ("a.jpg", jpeg_bytes(seed=1))),
        ("files", ("bad.jpg", b"nope")),
        ("files", ("b.jpg", jpeg_bytes(seed=2))),
    ]
    out = post(url, headers=bearer(keeping), files=two).json()
    assert out["stored"] == 2 and out["store_note"] is None  # the unreadable image is not kept
    assert post(url, headers=bearer(plain), files=two[:1]).json()["stored"] == 0  # a key without it keeps nothing
    more = [("files", (f"{i}.jpg", jpeg_bytes(seed=10 + i))) for i in range(2)]
    full = post(url, headers=bearer(keeping), files=more)
    assert full.status_code == 200 and all(p["error"] is None for p in full.json()["predictions"])  # still answered
    assert full.json()["stored"] == 1 and "full" in full.json()["store_note"]
    with server.in_workspace():
        queued = review.queue(saved.id)
    assert len(queued) == 3 and {q.source for q in queued} == {"api"} and {q.run_id for q in queued} == {run.name}
    assert {q.key_id for q in queued} == {keeping.split("_")[1]} and all(len(q.top) == 3 for q in queued)


def test_schemathesis_fuzzing_the_openapi_schema_finds_no_server_error(server, trained_run):
    token = server.key(trained_run.name)
    config = server.base / "schemathesis.toml"  # the run's id in the address, so the fuzzing reaches predict
    config.write_text(f'[parameters]\nrun_id = "{trained_run.name}"\n')
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "schemathesis"), "--config-file", str(config), "run",
         f"{server.api}/openapi.json", "--url", server.api,
         "-H", f"Authorization: Bearer {token}", "--checks", "not_a_server_error", "--max-examples", "30",
         "--seed", "23", "--workers", "1", "--request-timeout", "60", "--no-color"],
        capture_output=True, text=True, timeout=900, cwd=server.base,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "No issues found" in proc.stdout, proc.stdout[-2000:]
    assert "Traceback" not in server.log.read_text(errors="replace")
    assert server.alive() and httpx.get(f"{server.api}/health").status_code == 200


def test_run_info_gives_the_none_of_these_threshold_and_rate_of_a_run_that_can_say_it(trained_run, tmp_path):
    from core.api import schemas
    from core.workspace import runs

    run = Path(shutil.copytree(trained_run, tmp_path / trained_run.name))
    assert schemas.run_info(runs.read_run(run), "/api/v1").none_of_these_threshold is None
    runs.write_json(run / "none_of_these.json", {"format": 1, "fitted": True, "method": "mahalanobis-tied-ledoit-wolf",
                                                 "rate": 0.05, "threshold": 436.5, "validation_images": 40,
                                                 "validation_flagged": 0.05})  # fmt: skip
    info = schemas.run_info(runs.read_run(run), "/api/v1")
    assert info.none_of_these_threshold == 436.5 and info.none_of_these_rate == 0.05
    assert {"none_of_these_threshold", "none_of_these_rate"} <= set(schemas.RunInfo.model_json_schema()["properties"])
