#!/usr/bin/env bash
# The README's curl session, end to end: load the spam list, serve examples/app.py with uvicorn
# on 127.0.0.1, send the six requests, print each status and body, stop the server.
#   bash examples/curl_demo.sh          (needs: pip install -e '.[example]'; run from the repo root)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${VENV:-.venv}/bin
port=${PORT:-8765}
work=$(mktemp -d)
trap 'kill $server 2>/dev/null || true; wait $server 2>/dev/null || true; rm -rf "$work"' EXIT

"$bin/guard" load blocklists/spam/ >/dev/null
"$bin/python" - "$work" <<'PY'
import sys
from PIL import Image
work = sys.argv[1]
Image.open("blocklists/spam/crypto-x100.jpg").convert("RGB").save(f"{work}/recompressed.jpg", quality=50)
data = open("blocklists/spam/hot-deals.jpg", "rb").read()
open(f"{work}/corrupt.jpg", "wb").write(data[: len(data) // 3])
PY
"$bin/uvicorn" examples.app:app --host 127.0.0.1 --port "$port" --log-level warning &
server=$!
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done

show() { printf '%-34s -> ' "$1"; shift; curl -s -w '  [%{http_code}]\n' "$@"; }
url=http://127.0.0.1:$port
show "blocked image"            -F "file=@blocklists/spam/win-cash.jpg" "$url/upload"
show "JPEG q50 copy of another" -F "file=@$work/recompressed.jpg" "$url/upload"
show "edited copy (mirrored)"   -F "file=@examples/images/spam-edited.jpg" "$url/upload"
show "unrelated photo"          -F "file=@examples/images/unrelated.jpg" "$url/upload"
show "corrupt JPEG"             -F "file=@$work/corrupt.jpg" "$url/upload"
show "GET /"                    -o /dev/null "$url/"
show "non-image field"          -F "comment=just text" "$url/upload"
show "image + text field"       -F "file=@examples/images/unrelated.jpg" -F "comment=hi" "$url/upload"
