# Puts, gets and lists objects on an emulator with each cloud's own client, never through
# object_store: `python3 -c TOOL SCHEME ENDPOINT OP` with BUCKET and KEY (or the prefix) in
# the environment; `put` reads the body from stdin, `get` writes it to stdout, `keys` prints
# a JSON list.
import json
import os
import sys
import urllib.parse
import urllib.request

scheme, endpoint, op = sys.argv[1:4]
bucket, key = os.environ["BUCKET"], os.environ["KEY"]
out = sys.stdout.buffer

if scheme == "s3":
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing-secret-key",
        region_name="us-east-1",
    )
    if op == "bucket":
        s3.create_bucket(Bucket=bucket)
    elif op == "put":
        s3.put_object(Bucket=bucket, Key=key, Body=sys.stdin.buffer.read())
    elif op == "get":
        out.write(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    elif op == "keys":
        names = []
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key):
            names += [o["Key"] for o in page.get("Contents", [])]
        out.write(json.dumps(names).encode())
elif scheme == "az":
    from azure.storage.blob import BlobServiceClient

    account = os.environ["AZURE_ACCOUNT"]
    conn = (
        f"DefaultEndpointsProtocol=http;AccountName={account};"
        f"AccountKey={os.environ['AZURE_KEY']};BlobEndpoint={endpoint}/{account};"
    )
    service = BlobServiceClient.from_connection_string(conn)
    if op == "bucket":
        service.create_container(bucket)
    else:
        container = service.get_container_client(bucket)
        if op == "put":
            container.upload_blob(key, sys.stdin.buffer.read(), overwrite=True)
        elif op == "get":
            out.write(container.download_blob(key).readall())
        elif op == "keys":
            names = [b.name for b in container.list_blobs(name_starts_with=key)]
            out.write(json.dumps(names).encode())
elif scheme == "gs":
    # fake-gcs-server's JSON API needs no credentials.
    def call(method, path, body=None, headers=None):
        req = urllib.request.Request(endpoint + path, data=body, method=method, headers=headers or {})
        with urllib.request.urlopen(req) as r:
            return r.read()

    name = urllib.parse.quote(key, safe="")
    b = urllib.parse.quote(bucket, safe="")
    if op == "bucket":
        call("POST", "/storage/v1/b", json.dumps({"name": bucket}).encode(), {"content-type": "application/json"})
    elif op == "put":
        call("POST", f"/upload/storage/v1/b/{b}/o?uploadType=media&name={name}", sys.stdin.buffer.read(),
             {"content-type": "application/octet-stream"})
    elif op == "get":
        out.write(call("GET", f"/storage/v1/b/{b}/o/{name}?alt=media"))
    elif op == "keys":
        names, token = [], ""
        while True:
            q = f"prefix={name}" + (f"&pageToken={urllib.parse.quote(token)}" if token else "")
            page = json.loads(call("GET", f"/storage/v1/b/{b}/o?{q}"))
            names += [o["name"] for o in page.get("items", [])]
            token = page.get("nextPageToken")
            if not token:
                break
        out.write(json.dumps(names).encode())
else:
    sys.exit(f"unknown scheme {scheme}")
