"""The fake CDN: attachments served under ``/attachments/...``, stored from uploads or tests."""

from __future__ import annotations

import mimetypes
import re
import time
from typing import Any

from aiohttp import web

from tests.fakes.discord.faults import Faults
from tests.fakes.discord.records import RecordedRequest
from tests.fakes.discord.state import DiscordState


class Cdn:
    """Stores attachment bytes in ``state.cdn`` and serves them (downloads can be held)."""

    def __init__(self, state: DiscordState, faults: Faults) -> None:
        self.state = state
        self.faults = faults

    def _payload(
        self, path: str, att_id: str, filename: str, data: bytes, ctype: str
    ) -> dict[str, Any]:
        url = f"{self.state.url}/attachments/{path}?ex=0&is=0&hm=0"
        return {
            "id": att_id,
            "filename": filename,
            "size": len(data),
            "url": url,
            "proxy_url": url + "&proxy=1",
            "content_type": ctype,
        }

    def add_attachment(
        self,
        filename: str,
        data: bytes,
        content_type: str,
        width: int | None,
        height: int | None,
    ) -> dict[str, Any]:
        """Serve ``data``; return the attachment payload for an interaction (ephemeral)."""
        state = self.state
        att_id = state.snowflake()
        path = f"{state.channel_id}/{att_id}/{filename}"
        state.cdn[path] = (data, content_type)
        payload = self._payload(path, att_id, filename, data, content_type)
        payload["ephemeral"] = True
        if width is not None and height is not None:
            payload["width"] = width
            payload["height"] = height
        return payload

    def store_uploads(
        self, rec: RecordedRequest, channel_id: str, body: dict[str, Any]
    ) -> list[dict[str, Any]]:
        """Turn uploaded ``files[n]`` into attachment payloads served by the CDN."""
        meta: dict[str, dict[str, Any]] = {}
        for item in body.get("attachments") or []:
            if isinstance(item, dict) and "id" in item:
                meta[str(item["id"])] = item
        out: list[dict[str, Any]] = []
        for index, f in enumerate(rec.files):
            m = re.match(r"files\[(\d+)\]", f.field_name)
            key = m.group(1) if m else str(index)
            info = meta.get(key, {})
            filename = str(info.get("filename") or f.filename)
            att_id = self.state.snowflake()
            path = f"{channel_id}/{att_id}/{filename}"
            ctype = f.content_type
            if ctype in ("", "application/octet-stream"):
                ctype = mimetypes.guess_type(filename)[0] or "application/octet-stream"
            self.state.cdn[path] = (f.data, ctype)
            att = self._payload(path, att_id, filename, f.data, ctype)
            if info.get("description"):
                att["description"] = info["description"]
            out.append(att)
        return out

    async def serve(self, request: web.Request) -> web.StreamResponse:
        """``GET /attachments/{path}``: the stored bytes, 404 when unknown."""
        state = self.state
        path = request.match_info["path"]
        rec = RecordedRequest(
            "GET", "/attachments/" + path, dict(request.query), None, [], time.monotonic()
        )
        state.requests.append(rec)
        item = state.cdn.get(path)
        if item is None:
            rec.status = 404
            state.unknown_requests.append(rec)
            await state.notify()
            return web.Response(status=404, text="Not Found")
        hold = self.faults.take_hold(rec, effect_first=False)
        if hold is not None and not await self.faults.wait_hold(hold, rec):
            rec.status = 503
            rec.dropped = True
            return web.Response(status=503, text="dropped by the test")
        rec.status = 200
        await state.notify()
        return web.Response(body=item[0], content_type=item[1])
