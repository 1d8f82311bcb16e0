"""What the API answers, as pydantic models: the OpenAPI schema at ``/api/v1/openapi.json`` is made from these."""

from __future__ import annotations

from pydantic import BaseModel, Field

from core.model import calibration
from core.publish.card.facts import none_of_these
from core.workspace import runs


class Detail(BaseModel):
    detail: str = Field(description="What went wrong, in one sentence")


class Prediction(BaseModel):
    file: str
    label: str | None = Field(description="The most likely class; null when the image could not be read")
    probabilities: dict[str, float] = Field(description="Calibrated probability of every class")
    not_sure: bool | None = Field(description="The top probability is below the run's 'not sure' threshold")
    none_of_these: bool | None = Field(description="Unlike every class (null: the run does not say)")
    error: str | None = Field(description="Why this image was not classified; null when it was")


class PredictResponse(BaseModel):
    run: str
    predictions: list[Prediction]
    stored: int = Field(0, description="Images kept for review (a key made with --store-predictions)")
    store_note: str | None = Field(None, description="Why not every image was kept for review")


class RunInfo(BaseModel):
    run: str
    classes: list[str]
    image_size: int
    resize: str
    dataset: str
    dataset_id: str | None
    dataset_version: int | None
    metrics: dict[str, float | int | None]
    threshold: float | None = Field(description="Below this top probability an answer is 'not sure'")
    none_of_these_threshold: float | None = Field(
        None, description="Above this score an image is 'none of these' (null: the run cannot say)"
    )
    none_of_these_rate: float | None = Field(
        None, description="The share of the known classes' validation images the threshold lets be called 'none of "
        "these' by mistake, chosen when training (null: the run cannot say)",
    )  # fmt: skip
    finished: str
    card: str = Field(description="Address of the run's model card (Markdown)")
    predict: str = Field(description="Address to send images to")


class Health(BaseModel):
    status: str
    models_loaded: int
    waiting: int = Field(description="Images waiting for a model now")
    batches: int = Field(description="Forward passes run since the server started")
    images: int = Field(description="Images classified since the server started")


METRICS = ("val_accuracy", "val_loss", "accuracy", "loss", "epochs_completed", "train_images", "val_images")


def run_info(info: runs.RunInfo, prefix: str) -> RunInfo:
    version = info.config.to_dict().get("dataset_version")
    unlike = none_of_these(info.path)  # core.model.ood's record, read without TensorFlow
    return RunInfo(
        run=info.id, classes=info.classes, image_size=info.config.image_size, resize=info.config.resize,
        dataset=info.dataset, dataset_id=info.dataset_id or None,
        dataset_version=version if isinstance(version, int) else None,
        metrics={k: info.metrics[k] for k in METRICS if isinstance(info.metrics.get(k), int | float)},
        threshold=calibration.threshold_of(info.path), none_of_these_threshold=unlike["threshold"],
        none_of_these_rate=unlike["rate"], finished=info.finished,
        card=f"{prefix}/runs/{info.id}/card", predict=f"{prefix}/runs/{info.id}/predict",
    )  # fmt: skip


def _refusals(*codes: int) -> dict:
    words = {
        401: "No key, or a key this server does not know",
        403: "A key for another run, revoked or expired",
        404: "No such run",
        413: "Too many images or bytes in one request",
        415: "Not multipart or JSON",
        422: "A request that cannot be read",
        429: "Over the key's images a minute, or the model is busy",
    }
    return {c: {"model": Detail, "description": words[c]} for c in codes}


REFUSALS = _refusals(401, 403, 404, 422)
PREDICT_REFUSALS = _refusals(401, 403, 404, 413, 415, 422, 429)
PREDICT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["files"],
                    "properties": {"files": {"type": "array", "items": {"type": "string", "format": "binary"}}},
                }
            },
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["images"],
                    "properties": {
                        "images": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["data"],
                                "properties": {
                                    "name": {"type": "string"},
                                    "data": {"type": "string", "format": "byte", "description": "base64"},
                                },
                            },
                        }
                    },
                }
            },
        },
    }
}
