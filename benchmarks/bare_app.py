"""The ceiling of the ingest benchmark (``benchmarks/api_ingest.py``): FastAPI answering the
same POST with 202 and doing no database work, served by uvicorn exactly like
``unlearnd serve`` (same loop, same HTTP parser, same worker count)."""

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

app = FastAPI()


@app.post("/v1/deletion-requests", status_code=202)
async def accept(request: Request) -> JSONResponse:
    await request.body()
    return JSONResponse({"status": "pending"}, status_code=202)
