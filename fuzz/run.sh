#!/usr/bin/env bash
# Runs each fuzz target for MINUTES (default 10), two at a time, from a
# corpus seeded with the tests' own inputs: the shipped sample capture, the
# rules files, the Zeek conformance pcaps (as the packets target's frames),
# and the handwritten seeds in fuzz/seeds/. Crashes land in
# fuzz/artifacts/TARGET/; the corpus grows in fuzz/corpus/TARGET/.
# Installs what it needs when missing: a nightly toolchain and cargo-fuzz.
# Usage: fuzz/run.sh [MINUTES] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")"
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
cargo fuzz --version >/dev/null 2>&1 || cargo install cargo-fuzz --locked
minutes="${1:-10}"
shift || true
targets=("$@")
[ "${#targets[@]}" -eq 0 ] && targets=(packets http1 capture rules jsonpath har gor)

mkdir -p corpus
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    [ -d "seeds/$t" ] && cp -n seeds/"$t"/* "corpus/$t/" 2>/dev/null || true
done
cp -n ../captures/sample.jsonl corpus/capture/ 2>/dev/null || true
cp -n ../scenarios/*.toml corpus/rules/ 2>/dev/null || true
traces=../../shared/conformance/zeek-http/traces
if [ -d "$traces" ] && [ -d corpus/packets ]; then
    # Classic pcap records as the target's input: a 2-byte length, then
    # the frame (pcapng files are left out).
    python3 - "$traces" corpus/packets <<'PY'
import os, struct, sys
src, dst = sys.argv[1], sys.argv[2]
for name in sorted(os.listdir(src)):
    data = open(os.path.join(src, name), "rb").read()
    if len(data) < 24 or data[:4] not in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        continue
    out, at = bytearray(), 24
    while at + 16 <= len(data) and len(out) < 60000:
        incl = struct.unpack_from("<I", data, at + 8)[0]
        frame = data[at + 16: at + 16 + incl][:65535]
        out += struct.pack(">H", len(frame)) + frame
        at += 16 + incl
    open(os.path.join(dst, name + ".frames"), "wb").write(out)
PY
fi

cargo +nightly fuzz build
seconds=$((minutes * 60))
status=0
run() {
    local t="$1"
    mkdir -p "artifacts/$t"
    cargo +nightly fuzz run "$t" "corpus/$t" -- -max_total_time="$seconds" \
        -max_len=262144 -rss_limit_mb=2048 -print_final_stats=1 >"artifacts/$t.log" 2>&1 \
        && echo "fuzz: $t: no crash in $minutes min ($(grep -m1 -o 'stat::number_of_executed_units: *[0-9]*' "artifacts/$t.log" | grep -o '[0-9]*$') runs)" \
        || { echo "fuzz: $t: CRASH, see fuzz/artifacts/$t.log"; return 1; }
}
pending=()
for t in "${targets[@]}"; do
    run "$t" &
    pending+=($!)
    if [ "${#pending[@]}" -ge 2 ]; then
        wait "${pending[0]}" || status=1
        pending=("${pending[@]:1}")
    fi
done
for p in "${pending[@]}"; do wait "$p" || status=1; done
exit "$status"
