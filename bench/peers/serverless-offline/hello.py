# The python hello function of `nimbus bench`, served the same by Nimbus and by serverless-offline.
# `cold` is true only on the first invocation of a freshly loaded module: the harness uses it to
# check that a forced cold start really was one.
_fresh = True


def handler(event, context):
    global _fresh
    cold, _fresh = _fresh, False
    return {"hello": "world", "cold": cold}
