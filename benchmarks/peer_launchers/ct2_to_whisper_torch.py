"""Write an openai-whisper checkpoint (``{"dims", "model_state_dict"}``, ``.pt``) from a CTranslate2 Whisper
directory, so WhisperLiveKit's SimulStreaming, whose decoder is PyTorch Whisper, serves the very weights the
other systems serve, offline. Prints the alignment heads in WhisperLiveKit's ``--custom-alignment-heads`` form.

Run with the WhisperLiveKit venv's interpreter (it needs torch): ``python ct2_to_whisper_torch.py CT2_DIR OUT.pt``.
Reads ``model.bin`` (CTranslate2 binary format 6: variables, then aliases) and maps the fused projections back
(self-attention q|k|v, cross-attention k|v; Whisper's key projection has no bias, CTranslate2 stores zeros).
"""

import base64
import gzip
import json
import struct
import sys
from pathlib import Path

import numpy as np
import torch

DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}


def read_ct2(path: Path) -> dict[str, np.ndarray]:
    buf = path.read_bytes()
    pos = 0

    def num(fmt: str) -> int:
        nonlocal pos
        (value,) = struct.unpack_from(fmt, buf, pos)
        pos += struct.calcsize(fmt)
        return int(value)

    def text() -> str:
        nonlocal pos
        n = num("<H")
        value = buf[pos : pos + n - 1].decode()
        pos += n
        return value

    version = num("<I")
    if version != 6:
        raise SystemExit(f"CTranslate2 binary format {version} not supported (6 expected)")
    text()  # spec name
    num("<I")  # spec revision
    out: dict[str, np.ndarray] = {}
    for _ in range(num("<I")):
        name = text()
        dims = [num("<I") for _ in range(num("<B"))]
        dtype = np.dtype(DTYPES[num("<B")])
        nbytes = num("<I")
        out[name] = np.frombuffer(buf, dtype=dtype, count=nbytes // dtype.itemsize, offset=pos).reshape(dims)
        pos += nbytes
    return out


def convert(ct2_dir: Path) -> tuple[dict[str, object], str]:
    v = read_ct2(ct2_dir / "model.bin")
    sd: dict[str, torch.Tensor] = {}

    def put(name: str, array: np.ndarray) -> None:
        sd[name] = torch.from_numpy(np.array(array, dtype=np.float32))

    def linear(dst: str, src: str, bias: bool = True) -> None:
        put(f"{dst}.weight", v[f"{src}/weight"])
        if bias:
            put(f"{dst}.bias", v[f"{src}/bias"])

    def norm(dst: str, src: str) -> None:
        put(f"{dst}.weight", v[f"{src}/gamma"])
        put(f"{dst}.bias", v[f"{src}/beta"])

    def qkv(dst: str, weight: np.ndarray, bias: np.ndarray, names: tuple[str, ...]) -> None:
        for i, part in enumerate(names):
            rows = slice(i * weight.shape[0] // len(names), (i + 1) * weight.shape[0] // len(names))
            put(f"{dst}.{part}.weight", weight[rows])
            if part != "key":
                put(f"{dst}.{part}.bias", bias[rows])

    def layers(prefix: str) -> int:
        return len({k.split("/")[1] for k in v if k.startswith(f"{prefix}/layer_") and k.split("/")[1][6:].isdigit()})

    n_audio_layer, n_text_layer = layers("encoder"), layers("decoder")
    for side in ("encoder", "decoder"):
        count = n_audio_layer if side == "encoder" else n_text_layer
        for i in range(count):
            src, dst = f"{side}/layer_{i}", f"{side}.blocks.{i}"
            sa = f"{src}/self_attention"
            qkv(f"{dst}.attn", v[f"{sa}/linear_0/weight"], v[f"{sa}/linear_0/bias"], ("query", "key", "value"))
            linear(f"{dst}.attn.out", f"{sa}/linear_1")
            norm(f"{dst}.attn_ln", f"{sa}/layer_norm")
            if side == "decoder":
                ca = f"{src}/attention"
                linear(f"{dst}.cross_attn.query", f"{ca}/linear_0")
                qkv(f"{dst}.cross_attn", v[f"{ca}/linear_1/weight"], v[f"{ca}/linear_1/bias"], ("key", "value"))
                linear(f"{dst}.cross_attn.out", f"{ca}/linear_2")
                norm(f"{dst}.cross_attn_ln", f"{ca}/layer_norm")
            linear(f"{dst}.mlp.0", f"{src}/ffn/linear_0")
            linear(f"{dst}.mlp.2", f"{src}/ffn/linear_1")
            norm(f"{dst}.mlp_ln", f"{src}/ffn/layer_norm")
    linear("encoder.conv1", "encoder/conv1")
    linear("encoder.conv2", "encoder/conv2")
    put("encoder.positional_embedding", v["encoder/position_encodings/encodings"])
    norm("encoder.ln_post", "encoder/layer_norm")
    put("decoder.token_embedding.weight", v["decoder/embeddings/weight"])
    put("decoder.positional_embedding", v["decoder/position_encodings/encodings"])
    norm("decoder.ln", "decoder/layer_norm")
    n_audio_state = v["encoder/conv1/weight"].shape[0]
    n_text_state = v["decoder/embeddings/weight"].shape[1]
    dims = {
        "n_mels": int(v["encoder/conv1/weight"].shape[1]),
        "n_audio_ctx": int(v["encoder/position_encodings/encodings"].shape[0]),
        "n_audio_state": int(n_audio_state),
        "n_audio_head": int(v["encoder/num_heads"]),
        "n_audio_layer": n_audio_layer,
        "n_vocab": int(v["decoder/embeddings/weight"].shape[0]),
        "n_text_ctx": int(v["decoder/position_encodings/encodings"].shape[0]),
        "n_text_state": int(n_text_state),
        "n_text_head": int(v["decoder/num_heads"]),
        "n_text_layer": n_text_layer,
    }
    mask = np.zeros((n_text_layer, dims["n_text_head"]), dtype=bool)
    for layer, head in json.loads((ct2_dir / "config.json").read_text())["alignment_heads"]:
        mask[layer, head] = True
    heads = base64.b85encode(gzip.compress(mask.tobytes())).decode()
    return {"dims": dims, "model_state_dict": sd}, heads


def main() -> None:
    ct2_dir, out = Path(sys.argv[1]), Path(sys.argv[2])
    checkpoint, heads = convert(ct2_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    (out.parent / (out.name + ".alignment_heads")).write_text(heads)
    partial = out.with_name(out.name + ".partial")
    torch.save(checkpoint, partial)
    partial.replace(out)  # a run killed mid-write leaves no checkpoint that looks whole
    print(heads)


if __name__ == "__main__":
    main()
