"""An independent HTTP/3 client for Spooky's end-to-end tests: curl_cffi (libcurl with ngtcp2,
nghttp3 and BoringSSL).

Usage: curl_cffi_get.py PORT CA_PEM REQUEST...

Each REQUEST is `GET:/path` or `POST:/path:LENGTH` (a body of LENGTH bytes where byte i is
(i * 7 + 3) % 256). HTTP/3 only (no fallback), the certificate verified against CA_PEM for the
name "localhost", which is pinned to 127.0.0.1. Prints one JSON object per request.
"""

import hashlib
import json
import sys

from curl_cffi import CurlHttpVersion, CurlOpt, requests


def body(length):
    return bytes((i * 7 + 3) % 256 for i in range(length))


def main():
    port, ca = int(sys.argv[1]), sys.argv[2]
    # Spooky listens on 127.0.0.1 only: never let curl try ::1 for "localhost".
    options = {CurlOpt.RESOLVE: [f"localhost:{port}:127.0.0.1"]}
    with requests.Session(curl_options=options) as session:
        for spec in sys.argv[3:]:
            method, path, *rest = spec.split(":")
            data = body(int(rest[0])) if rest else None
            response = session.request(
                method,
                f"https://localhost:{port}{path}",
                data=data,
                http_version=CurlHttpVersion.V3ONLY,
                verify=ca,
                timeout=20,
            )
            print(
                json.dumps(
                    {
                        "method": method,
                        "path": path,
                        "sent": len(data) if data is not None else 0,
                        "status": response.status_code,
                        "x_backend": response.headers.get("x-backend"),
                        "http_version": response.http_version,
                        "length": len(response.content),
                        "sha256": hashlib.sha256(response.content).hexdigest(),
                    }
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
