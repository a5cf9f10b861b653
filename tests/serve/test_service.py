"""`pyairir serve`'s restoration service and JSON API, in process: what it returns equals
pyairir.eval.restore, bad input gets a message, jobs run one at a time, old ones are forgotten."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch
from PIL import Image

import pyairir
from pyairir.data.io import read_image, to_uint8
from pyairir.demo import load_demo_model, sample_photo
from pyairir.eval import restore, self_refine
from pyairir.paradigms import CPL, SIPL
from pyairir.serve import RestorationService, make_server
from pyairir.serve.server import request_limit

SHALLOW = dict(dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1)


def png(image: torch.Tensor) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(to_uint8(image)).save(buffer, "PNG")
    return buffer.getvalue()


def decode(data: bytes) -> torch.Tensor:
    return torch.from_numpy(np.asarray(Image.open(io.BytesIO(data))).transpose(2, 0, 1).copy()).float() / 255


def photo(h: int = 72, w: int = 100) -> torch.Tensor:
    return sample_photo("chelsea")[:, 40: 40 + h, 60: 60 + w]


def wait(service: RestorationService, job_id: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while (status := service.status(job_id))["state"] not in ("done", "error"):
        assert time.monotonic() < deadline, f"job {job_id} still {status['state']} after {timeout} s"
        time.sleep(0.02)
    return status


@pytest.fixture(scope="module")
def demo():
    return load_demo_model()


@pytest.fixture
def service(demo):
    service = RestorationService(demo, "demo")
    yield service
    service.close()


def test_restores_as_pyairir_eval_restore(service, demo):
    clean = photo()
    job = service.submit(png(clean))
    status = wait(service, job.id)
    assert status["state"] == "done", status["error"]
    restored = read_image(service.file(job.id, "restored"))
    assert np.array_equal(to_uint8(restored), to_uint8(restore(demo, decode(png(clean)))))
    result = status["result"]
    assert (result["width"], result["height"], result["tile"], result["model"]) == (100, 72, None, "demo")
    assert "metrics" not in result and "iterates" not in result and "prompts" not in result


def test_synthetic_degradation_shows_what_was_restored_and_scores_it(service, demo):
    clean = decode(png(photo()))
    job = service.submit(png(clean), degradation="noise", seed=3)
    result = wait(service, job.id)["result"]
    shown = read_image(service.file(job.id, "input"))
    assert not torch.equal(shown, clean)  # degraded, and the degraded image (8-bit) is what was restored:
    restored = read_image(service.file(job.id, "restored"))
    assert np.array_equal(to_uint8(restored), to_uint8(restore(demo, shown)))
    expected = pyairir.eval.psnr(restored[None], clean[None])  # against the upload (PNG-rounded output)
    assert result["metrics"]["restored"]["psnr"] == pytest.approx(float(expected), abs=0.02)
    assert result["metrics"]["input"]["psnr"] == pytest.approx(float(pyairir.eval.psnr(shown[None], clean[None])),
                                                               abs=0.01)
    assert result["metrics"]["restored"]["psnr"] > result["metrics"]["input"]["psnr"] + 3
    again = service.submit(png(clean), degradation="noise", seed=3)
    wait(service, again.id)
    assert torch.equal(read_image(service.file(again.id, "input")), shown)  # the seed decides the degradation


def test_a_clean_image_of_another_size_or_a_bad_upload_gets_a_message(service):
    image = png(photo())
    cases = [
        (dict(image=image[:400]), "the uploaded image could not be read (corrupt or not an image): image file is "
                                  "truncated"),
        (dict(image=b"this is not an image"), "the uploaded image could not be read (corrupt or not an image)"),
        (dict(image=image, clean=png(photo(64, 64))), "the clean image is 64x64, the uploaded one 100x72: they "
                                                      "must be the same size"),
    ]
    for kwargs, message in cases:
        status = wait(service, service.submit(**kwargs).id)
        assert status["state"] == "error" and status["error"].startswith(message), status["error"]
    with pytest.raises(ValueError, match="degradation must be one of none, noise, rain, haze, low_light, blur, "
                                         "got 'snow'"):
        service.submit(image, degradation="snow")
    with pytest.raises(ValueError, match="image: the upload is empty"):
        service.submit(b"")


def test_refuses_images_over_the_pixel_limit_before_decoding(demo):
    service = RestorationService(demo, "demo", max_pixels=100 * 72 - 1)
    try:
        status = wait(service, service.submit(png(photo())).id)
        assert status["error"] == ("the uploaded image has 100x72 = 7,200 pixels, more than this server's limit of "
                                   "7,199 (pyairir serve --max-pixels)")
        assert wait(service, service.submit(png(photo(71, 100))).id)["state"] == "done"
    finally:
        service.close()
    with pytest.raises(ValueError, match="max_pixels must be positive, got 0"):
        RestorationService(demo, "demo", max_pixels=0)


def test_one_job_at_a_time_in_order_and_old_jobs_forgotten(demo):
    running, overlap, order = [0], [], []

    def enter(module, args):
        running[0] += 1
        overlap.append(running[0])
        order.append(args[0].shape[-1])

    def leave(module, args, output):
        running[0] -= 1

    service = RestorationService(demo, "demo", keep=2)
    hooks = [demo.register_forward_pre_hook(enter), demo.register_forward_hook(leave)]
    try:
        jobs = [service.submit(png(photo(48, 48 + 8 * i))) for i in range(5)]
        statuses = [wait(service, j.id) for j in jobs[-1:]]
        assert statuses[0]["state"] == "done"
        assert max(overlap) == 1 and order == [48 + 8 * i for i in range(5)]
        assert set(service.jobs) == {j.id for j in jobs[-2:]}  # the 3 oldest forgotten, with their files
        assert sorted(p.name for p in service.folder.iterdir()) == sorted(j.id for j in jobs[-2:])
        with pytest.raises(KeyError):
            service.status(jobs[0].id)
    finally:
        for hook in hooks:
            hook.remove()
        service.close()
    assert not service.folder.exists()


def test_tiles_are_counted_as_progress(demo):
    service = RestorationService(demo, "demo", tile=48, overlap=16)
    try:
        status = wait(service, service.submit(png(photo(72, 100))).id)
        assert status["result"]["tile"] == 48 and status["done"] == status["total"] == 2 * 3
        assert np.array_equal(to_uint8(read_image(service.file(status["id"], "restored"))),
                           to_uint8(pyairir.eval.tiled_restore(demo, decode(png(photo(72, 100))), 48, 16)))
    finally:
        service.close()


def test_sipl_returns_every_iterate_and_cpl_its_prompts():
    torch.manual_seed(0)
    sipl = SIPL(pyairir.create_model("promptir", **SHALLOW), train_size=32).eval()
    service = RestorationService(sipl, "sipl", iterations=2)
    image = photo(40, 48)
    try:
        tiled = RestorationService(sipl, "sipl", iterations=2, tile=32, overlap=8)
        try:
            status = wait(tiled, tiled.submit(png(image)).id)
            assert status["done"] == status["total"] == 3 * 4  # 3 passes of 2 x 2 tiles
        finally:
            tiled.close()
        status = wait(service, service.submit(png(image), degradation="rain").id)
        result = status["result"]
        assert result["iterates"] == ["iterate-0", "iterate-1", "iterate-2"] and len(result["metrics"]["iterates"]) == 3
        assert status["done"] == status["total"] == 3  # every decoder pass counted as progress
        shown = read_image(service.file(status["id"], "input"))
        expected = self_refine(sipl, shown[None], 2)
        for name, iterate in zip(result["iterates"], expected):
            assert np.array_equal(to_uint8(read_image(service.file(status["id"], name))), to_uint8(iterate[0]))
    finally:
        service.close()
    torch.manual_seed(0)
    cpl = CPL(pyairir.create_model("promptir", **SHALLOW), top_k=1).eval()
    service = RestorationService(cpl, "cpl")
    try:
        result = wait(service, service.submit(png(image)).id)["result"]
        cpl(decode(png(image))[None])
        modules = [m for m in cpl.modules() if isinstance(m, pyairir.nn.SparsePromptModule)]
        assert [p["chosen"] for p in result["prompts"]] == [int(m.last_selection[0, 0]) for m in modules]
        assert [sum(p["counts"]) for p in result["prompts"]] == [1] * len(modules)
    finally:
        service.close()


@pytest.fixture
def server(service):
    server = make_server(service, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def call(url: str, data: bytes | None = None, headers: dict | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_the_api_answers_bad_requests_with_messages(server, service):
    status, body = call(server + "/")
    assert status == 200 and b"<title>pyairir" in body
    info = json.loads(call(server + "/api/info")[1])
    assert info == {"model": "demo", "max_pixels": 12_000_000, "iterations": None, "tile": None,
                    "request_limit": request_limit(12_000_000),
                    "degradations": ["none", "noise", "rain", "haze", "low_light", "blur"]}
    cases = [
        (b"{", 400, "Expecting property name enclosed in double quotes"),
        (b"[1]", 400, "the request must be a JSON object"),
        (json.dumps({"image": 3}).encode(), 400, "image: expected the file's bytes in base64, got int"),
        (json.dumps({"image": "@@"}).encode(), 400, "image: not valid base64"),
        (json.dumps({"image": "aGk=", "seed": -1}).encode(), 400, "seed must be a non-negative integer, got -1"),
        (json.dumps({"image": "aGk=", "degradation": "fog"}).encode(), 400, "degradation must be one of"),
    ]
    for data, code, message in cases:
        status, body = call(server + "/api/jobs", data, {"Content-Type": "application/json"})
        assert status == code and json.loads(body)["error"].startswith(message), body
    for path in ("/api/jobs/0123456789abcdef", "/api/jobs/0123456789abcdef/restored.png", "/../../etc/passwd",
                 "/api/jobs/..%2f..%2fetc/passwd"):
        assert call(server + path)[0] == 404


def test_an_upload_over_the_limit_is_read_and_answered(demo):
    service = RestorationService(demo, "demo", max_pixels=1000)
    server = make_server(service, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/api/jobs"
        status, body = call(url, b"x" * (request_limit(1000) + 1))
        assert status == 413 and json.loads(body)["error"] == (
            "the upload is 1.0 MiB, more than this server takes (1.0 MiB for images up to 1,000 pixels)")
        assert call(url, json.dumps({"image": base64.b64encode(png(photo())).decode()}).encode())[0] == 202
    finally:
        server.shutdown()
        server.server_close()
        service.close()


def test_the_api_restores(server, demo):
    image = png(photo())
    status, body = call(server + "/api/jobs", json.dumps({"image": "data:image/png;base64,"
                                                          + base64.b64encode(image).decode()}).encode())
    assert status == 202
    job = json.loads(body)["id"]
    deadline = time.monotonic() + 60
    while json.loads(call(f"{server}/api/jobs/{job}")[1])["state"] not in ("done", "error"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    status, restored = call(f"{server}/api/jobs/{job}/restored.png")
    assert status == 200 and np.array_equal(to_uint8(decode(restored)), to_uint8(restore(demo, decode(image))))
