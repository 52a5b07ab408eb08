# Shared by demo.sh and test.sh: check Java, install the project (once per change of pyproject.toml).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"

java_major() {
  local v
  v=$("${JAVA_HOME:+$JAVA_HOME/bin/}java" -version 2>&1 | awk -F'"' '/version/ {print $2; exit}')
  [ -n "$v" ] || { echo 0; return; }
  case "$v" in 1.*) echo "${v#1.}" | cut -d. -f1 ;; *) echo "$v" | cut -d. -f1 ;; esac
}

if ! command -v "${JAVA_HOME:+$JAVA_HOME/bin/}java" >/dev/null 2>&1 || [ "$(java_major)" -lt 17 ]; then
  echo "spark-causal needs Java 17 or newer for Spark (found: $(java_major 2>/dev/null || echo none))." >&2
  echo "hint: on Debian/Ubuntu run 'apt-get install -y openjdk-17-jre-headless', on macOS 'brew install openjdk@17'," >&2
  echo "      or point JAVA_HOME at a JDK 17+ and run this again." >&2
  exit 2
fi

stamp=".install-stamp"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || ! "$PY" -c "import spark_causal, pyspark, dowhy" 2>/dev/null; then
  echo "installing spark-causal and its dependencies (first run downloads PySpark, ~400 MB)..." >&2
  "$PY" -m pip install --quiet --disable-pip-version-check -e '.[test]'
  touch "$stamp"
fi
