#!/usr/bin/env bash
# Vendor the portal's charting library and the accessibility checker from the npm registry,
# with the ordinary npm client, as static files (the portal never loads anything from a CDN).
#
#   gpucenter/web/static/vendor/vega/   Vega 6.4.0, Vega-Lite 6.5.0, vega-embed 7.3.0,
#                                       vega-interpreter 2.3.2 (BSD-3-Clause each)
#   tests/web/vendor/axe-core/          axe-core 4.14.1 (MPL-2.0), for the browser tests only
#
# The files are the packages' own built files, unchanged, with their LICENSE, except
# vega-interpreter: npm ships it as an ES module that imports three functions from
# vega-util; it is wrapped here into a classic script that takes them from the `vega`
# global (the UMD build above exports them) and adds `vega.expressionInterpreter`. The
# interpreter is what lets Vega run under the portal's Content-Security-Policy, which has no
# 'unsafe-eval': Vega's default expression compiler uses `new Function`.
#
# Run from the repository root: bash scripts/vendor/fetch.sh. VERSIONS.txt beside the files
# records each file's version, licence and sha256; a test checks the files against it.
set -euo pipefail
cd "$(dirname "$0")/../.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

fetch() {  # name@version -> $work/name/package
  local spec=$1 name=${1%@*}
  (cd "$work" && npm pack "$spec" --silent >/dev/null)
  mkdir -p "$work/$name"
  tar xzf "$work/${name}-${spec##*@}.tgz" -C "$work/$name"
}

charts=gpucenter/web/static/vendor/vega
axe=tests/web/vendor/axe-core
mkdir -p "$charts" "$axe"
fetch vega@6.4.0
fetch vega-lite@6.5.0
fetch vega-embed@7.3.0
fetch vega-interpreter@2.3.2
fetch axe-core@4.14.1

cp "$work/vega/package/build/vega.min.js" "$charts/vega.min.js"
cp "$work/vega/package/LICENSE" "$charts/LICENSE-vega"
cp "$work/vega-lite/package/build/vega-lite.min.js" "$charts/vega-lite.min.js"
cp "$work/vega-lite/package/LICENSE" "$charts/LICENSE-vega-lite"
cp "$work/vega-embed/package/build/vega-embed.min.js" "$charts/vega-embed.min.js"
cp "$work/vega-embed/package/LICENSE" "$charts/LICENSE-vega-embed"
cp "$work/vega-interpreter/package/LICENSE" "$charts/LICENSE-vega-interpreter"
{
  echo "/* vega-interpreter 2.3.2 (BSD-3-Clause, see LICENSE-vega-interpreter), wrapped as a"
  echo "   classic script by scripts/vendor/fetch.sh: vega-util's functions come from the vega"
  echo "   global; the module's export becomes vega.expressionInterpreter. Body unchanged. */"
  echo "(function (vega) {"
  echo "'use strict';"
  echo "const { ascending, isString, DisallowedObjectProperties } = vega;"
  grep -v -e "^import " -e "^export " -e "^//# sourceMappingURL" \
    "$work/vega-interpreter/package/build/vega-interpreter.js"
  echo "vega.expressionInterpreter = expression;"
  echo "}(window.vega));"
} > "$charts/vega-interpreter.js"

cp "$work/axe-core/package/axe.min.js" "$axe/axe.min.js"
cp "$work/axe-core/package/LICENSE" "$axe/LICENSE"

record() {  # dir, then "file version licence" lines
  local dir=$1; shift
  {
    echo "# Vendored from the npm registry by scripts/vendor/fetch.sh; checked by a test."
    echo "# Source: https://registry.npmjs.org/<package>/-/<package>-<version>.tgz (npm pack),"
    echo "# the package's own built file, unchanged unless fetch.sh says otherwise."
    echo "# file  package@version  licence  sha256"
    for line in "$@"; do
      set -- $line
      echo "$1  $2  $3  $(sha256sum "$dir/$1" | cut -d' ' -f1)"
    done
  } > "$dir/VERSIONS.txt"
}
record "$charts" \
  "vega.min.js vega@6.4.0 BSD-3-Clause" \
  "vega-lite.min.js vega-lite@6.5.0 BSD-3-Clause" \
  "vega-embed.min.js vega-embed@7.3.0 BSD-3-Clause" \
  "vega-interpreter.js vega-interpreter@2.3.2 BSD-3-Clause"
record "$axe" "axe.min.js axe-core@4.14.1 MPL-2.0"
echo "vendored into $charts and $axe"
