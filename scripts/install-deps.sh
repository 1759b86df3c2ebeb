#!/usr/bin/env bash
# Installs the Debian packages Furnace needs to build, test and train.
# Idempotent and silent when everything is present. Not root: prints the
# apt-get line to run and exits 1.
set -euo pipefail

PACKAGES=(
  g++ make pkg-config git
  mpich libmpich-dev                 # MPI (process manager: hydra mpiexec)
  libhdf5-mpich-dev hdf5-tools       # parallel HDF5 1.10 (MPI-IO driver), h5dump
  libopenblas-dev                    # host GEMM
  libdnnl-dev                        # oneDNN 2.6: bf16 GEMMs (AVX512-BF16, AMX)
  libxxhash-dev                      # checkpoint checksums (XXH3, header-only use: inlined)
  libtrilinos-kokkos-dev             # Kokkos 3.4 (Serial backend)
  libtomlplusplus-dev                # config files (TOML)
  libcli11-dev                       # command line
  nlohmann-json3-dev                 # metrics, resolved config
  libgtest-dev                       # unit tests
  python3 python3-numpy python3-h5py python3-torch   # PyTorch reference checks
  python3-xxhash                     # scripts/export-torch verifies checkpoint checksums
  python3-matplotlib                 # scaling plots
  fortunes                           # the bundled English training corpus
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "install-deps: missing Debian packages: ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: not root; run:  sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: installed ${#missing[@]} packages"
