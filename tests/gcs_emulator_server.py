"""``python gcs_emulator_server.py start ...``: gcp-storage-emulator, plus the generation
precondition real Cloud Storage enforces on object uploads and deletes.

The emulator (2026.7) ignores ``ifGenerationMatch``; real GCS answers ``412 Precondition Failed``
when the object's current generation differs (``ifGenerationMatch=0``: "only if it does not exist").
The output lock (transforms/output_lock.py) relies on exactly that, so the tests' emulator enforces
it for the JSON API's media/multipart uploads and object deletes, the requests the lock makes.
Everything else is the emulator as installed; its own command line is used unchanged.
"""
from __future__ import annotations

import sys
import urllib.parse
from http import HTTPStatus


def _install() -> None:
    from gcp_storage_emulator import server
    from gcp_storage_emulator.exceptions import NotFound
    from gcp_storage_emulator.handlers import objects

    def current_generation(storage, bucket: str, name: str) -> str:
        try:
            return str(storage.get_file_obj(bucket, name)["generation"])
        except NotFound:
            return "0"

    def guarded(handler, object_name):
        def handle(request, response, storage, *args, **kwargs):
            wanted = request.query.get("ifGenerationMatch")
            name = object_name(request) if wanted else None
            if name and current_generation(storage, request.params["bucket_name"], name) != wanted[0]:
                response.status = HTTPStatus.PRECONDITION_FAILED
                response.json({"error": {"code": 412, "message": "At least one of the pre-conditions you specified did not hold.",
                                         "errors": [{"reason": "conditionNotMet"}]}})
                return None
            return handler(request, response, storage, *args, **kwargs)

        return handle

    def upload_name(request):
        if "name" in request.query:
            return request.query["name"][0]
        data = request.data
        return data.get("meta", {}).get("name") if isinstance(data, dict) else None

    replaced = {objects.insert: guarded(objects.insert, upload_name),
                objects.delete: guarded(objects.delete, lambda request: request.params["object_id"])}
    for _, handlers in server.HANDLERS:
        for method, handler in list(handlers.items()):
            if handler in replaced:
                handlers[method] = replaced[handler]
    objects.insert = replaced[objects.insert]  # the server's fallback for uploads without /upload

    made = objects._make_object_resource

    def quoted_links(base_url, bucket_name, object_name, *args, **kwargs):
        """An object's links with its name %-quoted, as GCS gives them (the emulator wrote the name
        as it is: the client downloads from mediaLink, so a name holding '#', '?' or '%' gave 404)."""
        obj = made(base_url, bucket_name, object_name, *args, **kwargs)
        name = urllib.parse.quote(object_name, safe="")
        for link in ("mediaLink", "selfLink"):
            obj[link] = obj[link].replace(f"/o/{object_name}", f"/o/{name}", 1)
        return obj

    objects._make_object_resource = quoted_links


if __name__ == "__main__":
    _install()
    from gcp_storage_emulator.__main__ import main

    sys.exit(main(sys.argv[1:]))
