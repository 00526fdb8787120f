"""What the engine POSTs for a task: its images (as links or bytes), prompt and options."""

from __future__ import annotations

import base64

from bot.config import ImageTransport
from bot.engine.callbacks import callback_url
from bot.engine.config import EngineConfig
from bot.kling.models import ImageItem, MultiImageRequest
from bot.media import MediaStore
from bot.tasks import Task


async def build_request(task: Task, media: MediaStore, config: EngineConfig) -> MultiImageRequest:
    """The submit's body. Discord's links go when IMAGE_TRANSPORT=url and intake kept them,
    else the kept inputs as base64; raises `FileNotFoundError` when those are gone."""
    urls = task.notes.image_urls
    if config.image_transport is ImageTransport.URL and urls:
        images = list(urls)
    else:
        images = [
            base64.b64encode(data).decode("ascii")
            for data in await media.load_inputs(task.input_dir)
        ]
        if not images:
            raise FileNotFoundError(task.input_dir)
    return MultiImageRequest(
        model_name=config.model,
        image_list=[ImageItem(image=image) for image in images],
        prompt=task.prompt,
        external_task_id=task.external_task_id,
        callback_url=callback_url(config.callback_public_url, task),
        **task.options.to_json(),
    )
