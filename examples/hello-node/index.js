// The nodejs example: greets whoever the event names and shows what Lambda's context offers.
exports.handler = async (event, context) => {
  const name = (event && typeof event === "object" && event.name) || "world";
  console.log(`hello from node, ${name}`);
  return {
    message: `Hello, ${name}!`,
    runtime: "nodejs",
    requestId: context.awsRequestId,
    function: context.functionName,
    version: context.functionVersion,
    memoryLimitInMB: context.memoryLimitInMB,
    remainingMs: context.getRemainingTimeInMillis(),
    echo: event,
  };
};
