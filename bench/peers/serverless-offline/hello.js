// The node hello function of `nimbus bench`, served the same by Nimbus and by serverless-offline.
// `cold` is true only on the first invocation of a freshly loaded module: the harness uses it to
// check that a forced cold start really was one.
let fresh = true;

exports.handler = async () => {
  const cold = fresh;
  fresh = false;
  return { hello: 'world', cold };
};
