// A stand-in function module: a node spare loads it through `require`, and invokes it once, while
// it waits for its own function, so a cold start finds the loader and the invoke path warm.
exports.handler = async (event) => ({ ok: true, event });
