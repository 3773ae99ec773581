# The wheel parts of the prepared GPU check: sourced by prepare.sh (which makes and
# verifies them) and check.sh (which verifies and reassembles them on the GPU machine).
#
# A parts folder holds part-K-of-N/ folders, each with one piece of the bundle (an xz
# tar of wheels/*.whl) as `chunk` and a copy of SHA256SUMS, which lists, in this order:
#   <sha256>  wheels/NAME.whl          each wheel, as the bundle holds it
#   <sha256>  gpu-wheels.tar.xz        the bundle
#   <sha256>  part-K-of-N/chunk        each piece, in the order they are concatenated
# Every part folder's copy is the same file, so any one of them names the whole set.

PARTS_BUNDLE=gpu-wheels.tar.xz
PARTS_SUMS=SHA256SUMS

parts_die() {
    echo "parts: $*" >&2
    return 1
}

# The SHA256SUMS of a parts folder (the first part folder's copy; all must be the same).
parts_sums_file() {
    local parts=$1 first="" f
    for f in "$parts"/part-*/"$PARTS_SUMS"; do
        [ -f "$f" ] || continue
        if [ -z "$first" ]; then
            first=$f
        elif ! cmp -s "$first" "$f"; then
            parts_die "$f differs from $first: the part folders come from two runs of prepare.sh" || return 1
        fi
    done
    [ -n "$first" ] || { parts_die "no part folder (part-K-of-N/$PARTS_SUMS) in $parts"; return 1; }
    echo "$first"
}

# The part folders SHA256SUMS names, in order, one a line.
parts_expected() {
    local sums=$1
    sed -n 's#^[0-9a-f]\{64\}  \(part-[0-9]*-of-[0-9]*\)/chunk$#\1#p' "$sums"
}

# Checks the part folders present against the checksums. With "all", every part must be
# there; without, missing ones are listed and allowed (the check between two carries).
# Prints one line per part; returns 1 when a part is corrupt (or missing, with "all").
parts_verify() {
    local parts=$1 need=${2:-} sums part line want got missing=0 bad=0
    sums=$(parts_sums_file "$parts") || return 1
    local expected
    expected=$(parts_expected "$sums")
    [ -n "$expected" ] || { parts_die "$sums lists no part"; return 1; }
    for part in $expected; do
        line=$(grep "  $part/chunk\$" "$sums")
        want=${line%% *}
        if [ ! -f "$parts/$part/chunk" ]; then
            echo "  $part: missing"
            missing=$((missing + 1))
            continue
        fi
        got=$(sha256sum "$parts/$part/chunk")
        got=${got%% *}
        if [ "$got" = "$want" ]; then
            echo "  $part: ok ($(stat -c %s "$parts/$part/chunk") bytes)"
        else
            echo "  $part: CORRUPT (sha256 $got, want $want): carry it again"
            bad=$((bad + 1))
        fi
    done
    if [ "$bad" -gt 0 ]; then
        parts_die "$bad part(s) corrupt" || return 1
    fi
    if [ "$need" = all ] && [ "$missing" -gt 0 ]; then
        parts_die "$missing part(s) missing: carry them first, in the order above" || return 1
    fi
    return 0
}

# Concatenates the (verified) parts into DEST/gpu-wheels.tar.xz, checks the bundle, extracts
# DEST/wheels/*.whl and checks each wheel. Prints the wheels, one a line.
parts_reassemble() {
    local parts=$1 dest=$2 python=${3:-python3} sums part
    sums=$(parts_sums_file "$parts") || return 1
    parts_verify "$parts" all >/dev/null || { parts_verify "$parts" all; return 1; }
    mkdir -p "$dest"
    rm -rf "$dest/wheels" "$dest/$PARTS_BUNDLE"
    for part in $(parts_expected "$sums"); do
        cat "$parts/$part/chunk"
    done >"$dest/$PARTS_BUNDLE"
    grep "  $PARTS_BUNDLE\$" "$sums" | (cd "$dest" && sha256sum --quiet -c -) \
        || { parts_die "the reassembled bundle does not match its checksum"; return 1; }
    # Python's tarfile reads xz without the xz program; the "data" filter refuses links and
    # paths outside DEST.
    "$python" - "$dest/$PARTS_BUNDLE" "$dest" <<'EOF' || { parts_die "cannot extract the bundle"; return 1; }
import sys
import tarfile

with tarfile.open(sys.argv[1]) as bundle:
    bundle.extractall(sys.argv[2], filter="data")
EOF
    rm -f "$dest/$PARTS_BUNDLE"
    local wheel_lines
    wheel_lines=$(grep '  wheels/[^/]*\.whl$' "$sums")
    [ -n "$wheel_lines" ] || { parts_die "$sums lists no wheel"; return 1; }
    echo "$wheel_lines" | (cd "$dest" && sha256sum --quiet -c -) \
        || { parts_die "an extracted wheel does not match its checksum"; return 1; }
    local listed extracted
    listed=$(echo "$wheel_lines" | sed 's#^.*  wheels/##' | sort)
    extracted=$(cd "$dest/wheels" && ls -1 | sort)
    [ "$listed" = "$extracted" ] \
        || { parts_die "the bundle holds other files than SHA256SUMS lists"; return 1; }
    echo "$listed"
}

# Makes PARTS (replacing it) from the wheels in WHEELS: the bundle, split into pieces of at
# most PART_BYTES, each in its own folder with SHA256SUMS. XZ_LEVEL: xz's preset (0-9).
parts_make() {
    local wheels=$1 parts=$2 part_bytes=$3 xz_level=${4:-9}
    local tmp n i name
    ls "$wheels"/*.whl >/dev/null 2>&1 || { parts_die "no wheel in $wheels"; return 1; }
    tmp=$(mktemp -d "$(dirname "$parts")/.prepare-tmp.XXXXXX")
    mkdir -p "$tmp/stage/wheels" "$tmp/new"
    cp "$wheels"/*.whl "$tmp/stage/wheels/"
    (cd "$tmp/stage" && sha256sum wheels/*.whl) >"$tmp/new/$PARTS_SUMS.wheels"
    # A deterministic tar: sorted, no owners or times.
    tar -C "$tmp/stage" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf - wheels \
        | xz -T0 "-$xz_level" -c >"$tmp/$PARTS_BUNDLE"
    (cd "$tmp" && sha256sum "$PARTS_BUNDLE") >"$tmp/new/$PARTS_SUMS.bundle"
    (cd "$tmp" && split -b "$part_bytes" -d -a 3 "$PARTS_BUNDLE" piece.)
    n=$(ls "$tmp"/piece.* | wc -l)
    i=0
    for piece in $(ls "$tmp"/piece.* | sort); do
        i=$((i + 1))
        name=part-$i-of-$n
        mkdir "$tmp/new/$name"
        mv "$piece" "$tmp/new/$name/chunk"
    done
    : >"$tmp/new/$PARTS_SUMS.parts"
    for i in $(seq 1 "$n"); do
        (cd "$tmp/new" && sha256sum "part-$i-of-$n/chunk") >>"$tmp/new/$PARTS_SUMS.parts"
    done
    cat "$tmp/new/$PARTS_SUMS.wheels" "$tmp/new/$PARTS_SUMS.bundle" "$tmp/new/$PARTS_SUMS.parts" \
        >"$tmp/new/$PARTS_SUMS"
    rm "$tmp/new/$PARTS_SUMS".*
    for i in $(seq 1 "$n"); do
        cp "$tmp/new/$PARTS_SUMS" "$tmp/new/part-$i-of-$n/$PARTS_SUMS"
    done
    rm -rf "$parts"
    mv "$tmp/new" "$parts"
    rm -rf "$tmp"
}
