// Fault injection for testers: FURNACE_FAULT="site[@rank][,site[@rank]...]" makes
// fault::hit(site) true on that world rank (every rank when @rank is omitted), so a
// test can make one rank fail at a named place and check that the job ends with the
// reason instead of hanging. Always compiled in; a site costs one string comparison
// against an environment variable parsed once. The sites are listed in docs/testing.md.
#pragma once
#include <string>

namespace furnace::comm::fault {

// True when FURNACE_FAULT names `site` for this process's world rank (MPI must be
// initialised for a rank-qualified entry to match; before it, only bare sites match).
bool hit(const char* site);

// Throws std::runtime_error("injected fault at <site> (FURNACE_FAULT)") when hit(site).
void maybe_throw(const char* site);

}  // namespace furnace::comm::fault
