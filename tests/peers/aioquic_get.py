"""An independent HTTP/3 client for Spooky's end-to-end tests: aioquic (pure Python QUIC and
HTTP/3, pylsqpack for QPACK).

Usage: aioquic_get.py PORT CA_PEM REQUEST...

Same requests and output as curl_cffi_get.py: `GET:/path` or `POST:/path:LENGTH`, one JSON
object per request. Connects to 127.0.0.1:PORT, verifying the certificate for "localhost".
Requests go one after another on one connection.
"""

import asyncio
import hashlib
import json
import sys

from aioquic.asyncio import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import StreamReset


def body(length):
    return bytes((i * 7 + 3) % 256 for i in range(length))


class Http3Client(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.http = H3Connection(self._quic)
        self.pending = {}

    def quic_event_received(self, event):
        if isinstance(event, StreamReset) and event.stream_id in self.pending:
            state = self.pending.pop(event.stream_id)
            state["done"].set_exception(
                RuntimeError(f"stream reset with code {event.error_code:#x}")
            )
            return
        for h3_event in self.http.handle_event(event):
            state = self.pending.get(getattr(h3_event, "stream_id", None))
            if state is None:
                continue
            if isinstance(h3_event, HeadersReceived):
                state["headers"].extend(h3_event.headers)
            elif isinstance(h3_event, DataReceived):
                state["body"].extend(h3_event.data)
            if getattr(h3_event, "stream_ended", False):
                del self.pending[h3_event.stream_id]
                state["done"].set_result(None)

    async def request(self, method, authority, path, data):
        stream_id = self._quic.get_next_available_stream_id()
        headers = [
            (b":method", method.encode()),
            (b":scheme", b"https"),
            (b":authority", authority.encode()),
            (b":path", path.encode()),
            (b"user-agent", b"aioquic"),
        ]
        if data is not None:
            headers.append((b"content-length", str(len(data)).encode()))
        state = {
            "headers": [],
            "body": bytearray(),
            "done": asyncio.get_running_loop().create_future(),
        }
        self.pending[stream_id] = state
        self.http.send_headers(stream_id, headers, end_stream=data is None)
        if data is not None:
            self.http.send_data(stream_id, data, end_stream=True)
        self.transmit()
        await asyncio.wait_for(state["done"], timeout=20)
        return dict(state["headers"]), bytes(state["body"])


async def main():
    port, ca = int(sys.argv[1]), sys.argv[2]
    configuration = QuicConfiguration(
        is_client=True, alpn_protocols=H3_ALPN, server_name="localhost"
    )
    configuration.load_verify_locations(ca)
    async with connect(
        "127.0.0.1", port, configuration=configuration, create_protocol=Http3Client
    ) as client:
        for spec in sys.argv[3:]:
            method, path, *rest = spec.split(":")
            data = body(int(rest[0])) if rest else None
            headers, content = await client.request(
                method, f"localhost:{port}", path, data
            )
            status = headers.get(b":status", b"0").decode()
            backend = headers.get(b"x-backend")
            print(
                json.dumps(
                    {
                        "method": method,
                        "path": path,
                        "sent": len(data) if data is not None else 0,
                        "status": int(status),
                        "x_backend": backend.decode() if backend is not None else None,
                        "http_version": 30,
                        "length": len(content),
                        "sha256": hashlib.sha256(content).hexdigest(),
                    }
                ),
                flush=True,
            )
        client.close()
        await client.wait_closed()


if __name__ == "__main__":
    asyncio.run(main())
