#!/usr/bin/env bash
# Build (once) llama.cpp for `fmgauge quantize eval --engine llama.cpp` and `quantize compare --peers llama.cpp`:
# the tools llama-quantize, llama-imatrix and llama-perplexity plus the llama-cpp-python binding, all from the
# vendored llama.cpp source inside the PyPI sdist of llama-cpp-python (no third-party code in this repository).
# llama.cpp is compiled ONCE as shared libraries; the binding is installed without its own build
# (CMAKE_ARGS=-DLLAMA_BUILD=OFF) and given those libraries, so tools and binding run the same code.
# Takes ~15-25 min on 2 cores the first time; later calls only print the paths.
#   usage: scripts/llama-build.sh            (prints the cache directory on the last line)
#   FMGAUGE_LLAMA_ROOT   where (default: ~/.cache/fmgauge/llama-cpp)
#   LLAMA_CPP_PYTHON     sdist version (default 0.3.36)
#   LLAMA_BUILD_JOBS     parallel compile jobs (default 2)
# Layout of <root>/<version>/: bin/llama-{quantize,imatrix,perplexity}, lib/*.so, venv/bin/python (with llama_cpp),
# BUILD-INFO (versions, compiler, time), .complete.
set -euo pipefail
version="${LLAMA_CPP_PYTHON:-0.3.36}"
jobs="${LLAMA_BUILD_JOBS:-2}"
root="${FMGAUGE_LLAMA_ROOT:-$HOME/.cache/fmgauge/llama-cpp}/$version"
python="${PYTHON:-python3}"
log() { echo "[llama $(date -u +%H:%M:%S)] $*" >&2; }

if [ -f "$root/.complete" ]; then
  echo "$root"
  exit 0
fi
mkdir -p "$root"
start=$(date +%s)

sdist="$root/sdist/llama_cpp_python-$version.tar.gz"
if [ ! -f "$sdist" ]; then
  log "downloading the llama-cpp-python $version sdist from PyPI"
  "$python" -m pip download -q --no-deps --no-binary :all: "llama-cpp-python==$version" -d "$root/sdist"
fi
src="$root/src/llama_cpp_python-$version"
if [ ! -d "$src/vendor/llama.cpp" ]; then
  log "unpacking $sdist"
  rm -rf "$root/src" && mkdir -p "$root/src"
  tar -xzf "$sdist" -C "$root/src"
fi

build="$root/build"
log "configuring llama.cpp (vendor/llama.cpp of the sdist) in $build"
cmake -S "$src/vendor/llama.cpp" -B "$build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=OFF \
  -DLLAMA_BUILD_COMMON=ON -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DGGML_NATIVE=ON >"$root/cmake-configure.log" 2>&1 \
  || { log "cmake configure failed; see $root/cmake-configure.log"; exit 1; }
log "compiling llama, llama-quantize, llama-imatrix, llama-perplexity with $jobs jobs (log: $root/cmake-build.log)"
cmake --build "$build" -j "$jobs" --target llama llama-quantize llama-imatrix llama-perplexity \
  >"$root/cmake-build.log" 2>&1 || { log "compile failed; see $root/cmake-build.log"; exit 1; }

mkdir -p "$root/bin" "$root/lib"
for tool in llama-quantize llama-imatrix llama-perplexity; do
  cp -f "$build/bin/$tool" "$root/bin/$tool"
done
find "$build" -name 'lib*.so*' -exec cp -a {} "$root/lib/" \;

log "installing the llama-cpp-python binding (no second compile) into $root/venv"
rm -rf "$root/venv"
"$python" -m venv "$root/venv"
"$root/venv/bin/pip" install -q "numpy" "typing-extensions" "diskcache" "jinja2" 2>&1 \
  | grep -v -e "^WARNING: Location" -e "^\[notice\]" >&2 || true
CMAKE_ARGS="-DLLAMA_BUILD=OFF -DLLAVA_BUILD=OFF" "$root/venv/bin/pip" install -q --no-deps "$sdist" 2>&1 \
  | grep -v -e "^WARNING: Location" -e "^\[notice\]" >&2 || true
pkg=$("$root/venv/bin/python" -c "import importlib.util as u; print(u.find_spec('llama_cpp').submodule_search_locations[0])")
mkdir -p "$pkg/lib"
cp -a "$root/lib/." "$pkg/lib/"
"$root/venv/bin/python" -c "import llama_cpp; print('llama_cpp', llama_cpp.__version__)" >&2 \
  || { log "the binding does not import; nothing was marked complete"; exit 1; }
for tool in llama-quantize llama-imatrix llama-perplexity; do
  LD_LIBRARY_PATH="$root/lib" "$root/bin/$tool" --help >/dev/null 2>&1 || [ $? -le 1 ] \
    || { log "$tool does not start; nothing was marked complete"; exit 1; }
done
{
  echo "llama-cpp-python $version (PyPI sdist), vendored llama.cpp"
  echo "compiler: $(c++ --version | head -1)"
  echo "cmake: $(cmake --version | head -1)"
  echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ) in $(( $(date +%s) - start )) s with $jobs jobs"
} >"$root/BUILD-INFO"
touch "$root/.complete"
log "done in $(( $(date +%s) - start )) s"
echo "$root"
