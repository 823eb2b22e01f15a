#!/usr/bin/env bash
# Render reports/<dataset>.html in a real headless browser and save a screenshot, to check by eye
# that the headline table and the plots are visible (Debian: apt-get install chromium).
# Usage: scripts/screenshot_report.sh [reports/digits.html] [out.png]
set -euo pipefail
page=${1:-reports/digits.html}
out=${2:-${page%.html}.screenshot.png}
browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
if [ -z "$browser" ]; then
    echo "no chromium found: apt-get install chromium (or pass a browser on PATH)" >&2
    exit 2
fi
"$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1280,2600 \
    --screenshot="$out" "file://$(realpath "$page")" 2>/dev/null
echo "$out"
