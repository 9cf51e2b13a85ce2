//! ctrackd: the daemon (config, flow cache, control socket, logging,
//! signals). Filled by the daemon work.
