"""The Tinker SDK's binary wire format, both ways: a ``forward_backward`` request (protobuf) into
mathrl :class:`~mathrl.train.learner.Datum` records, and results (``ForwardBackwardOutput``,
``SampleResponse``) into the protobuf the SDK reads. The message definitions are the SDK's own
(``tinker.proto.tinker_public_pb2``), so the two sides cannot drift apart; numbers travel as
little-endian arrays of the declared dtype.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from mathrl.train.learner import Datum


class WireError(ValueError):
    """A request the server cannot read (reported to the client as a user error)."""


def pb():
    """The SDK's generated protobuf module (``pip install tinker``: mathrl's ``tinker`` extra)."""
    try:
        from tinker.proto import tinker_public_pb2
    except ImportError as err:
        raise WireError("the Tinker wire format needs the tinker SDK: pip install 'mathrl[tinker]'") from err
    return tinker_public_pb2


_DTYPES = {1: np.float32, 2: np.int64, 3: np.int32}


def tensor_array(tensor) -> np.ndarray:
    """A ``Tensor`` message as a dense numpy array (sparse CSR densified, as the SDK encodes 2-D
    tensors whose zeros dominate)."""
    dtype = _DTYPES.get(tensor.dtype)
    if dtype is None:
        raise WireError(f"tensor dtype {tensor.dtype} is not supported (float32, int64 and int32 are)")
    shape = tuple(tensor.shape)
    if tensor.WhichOneof("encoding") == "sparse_csr":
        csr = tensor.sparse_csr
        values = np.frombuffer(csr.values, dtype=dtype)
        crow = np.frombuffer(csr.crow_indices, dtype=np.int64)
        cols = np.frombuffer(csr.col_indices, dtype=np.int64)
        dense = np.zeros(shape, dtype=dtype)
        for row in range(len(crow) - 1):
            dense[row, cols[crow[row]:crow[row + 1]]] = values[crow[row]:crow[row + 1]]
        return dense
    array = np.frombuffer(tensor.dense, dtype=dtype)
    return array.reshape(shape) if shape else array


@dataclass(frozen=True)
class ForwardBackwardRequest:
    model_id: str
    seq_id: int
    loss_fn: str
    loss_fn_config: dict[str, float]
    forward_only: bool
    data: list[Datum]


def read_forward_backward(body: bytes) -> ForwardBackwardRequest:
    """A serialized ``ForwardBackwardRequest``: its datums as mathrl records (text chunks only;
    ``target_tokens`` required, ``weights``, ``logprobs`` and ``advantages`` as they come)."""
    message = pb().ForwardBackwardRequest()
    try:
        message.ParseFromString(body)
    except Exception as err:  # noqa: BLE001 - protobuf's DecodeError and friends
        raise WireError(f"the forward_backward body is not a ForwardBackwardRequest: {err}") from None
    config = dict(message.loss_fn_config)
    for key, value in message.loss_fn_config_v2.items():  # v2 carries every value; numbers only here
        if value.WhichOneof("value") == "text":
            raise WireError(f"loss_fn_config[{key!r}] is text ({value.text!r}); the built-in losses "
                            "take numbers")
        config[key] = value.number
    data = []
    for index, d in enumerate(message.data):
        tokens: list[int] = []
        for chunk in d.model_input:
            if chunk.WhichOneof("chunk") != "encoded_text":
                raise WireError(f"datum {index}: only text model inputs are supported, not "
                                f"{chunk.WhichOneof('chunk')} chunks")
            tokens.extend(np.frombuffer(chunk.encoded_text.tokens, dtype=np.int32).tolist())
        inputs = {key: tensor_array(t) for key, t in d.loss_fn_inputs.items()}
        if "target_tokens" not in inputs:
            raise WireError(f"datum {index}: loss_fn_inputs has no target_tokens")
        unknown = sorted(set(inputs) - {"target_tokens", "weights", "logprobs", "advantages"})
        if unknown:
            raise WireError(f"datum {index}: loss_fn_inputs {unknown} are not supported (target_tokens, "
                            "weights, logprobs, advantages are)")
        if any(v.ndim != 1 for v in inputs.values()):
            raise WireError(f"datum {index}: loss_fn_inputs must be 1-D, one value per input token")

        try:
            data.append(Datum(tuple(tokens), _field(inputs, "target_tokens", int),
                              _field(inputs, "weights", float), _field(inputs, "logprobs", float),
                              _field(inputs, "advantages", float)))
        except ValueError as err:
            raise WireError(f"datum {index}: {err}") from None
    return ForwardBackwardRequest(message.model_id, message.seq_id, message.loss_fn, config,
                                  message.forward_only, data)


def _field(inputs: dict, name: str, cast) -> tuple | None:
    return None if name not in inputs else tuple(cast(x) for x in inputs[name].tolist())


def _batched(arrays: Sequence[np.ndarray], dtype_code: int):
    """Per-datum arrays as one ``BatchedTensor``: the arrays concatenated, with byte offsets."""
    tensor = pb().BatchedTensor()
    parts = [np.ascontiguousarray(a) for a in arrays]
    tensor.data = b"".join(a.tobytes() for a in parts)
    offsets = np.cumsum([0] + [a.nbytes for a in parts]).astype(np.int64)
    tensor.offsets = offsets.tobytes()
    tensor.dtype = dtype_code
    return tensor


def forward_backward_output(fields: Mapping[str, Sequence[Sequence[float]]],
                            metrics: Mapping[str, float]) -> bytes:
    """A serialized ``ForwardBackwardOutput``: one record of per-datum float32 ``fields``
    (``logprobs``, ``elementwise_loss``) and the metrics (keys ``name:reduction``)."""
    message = pb().ForwardBackwardOutput()
    message.loss_fn_output_type = "ArrayRecord"
    record = message.loss_fn_outputs.add()
    record.type_tag = "ArrayRecord"
    record.num_datums = len(next(iter(fields.values()))) if fields else 0
    for name, per_datum in fields.items():
        record.fields[name].CopyFrom(_batched([np.asarray(x, dtype=np.float32) for x in per_datum], 1))
    for key, value in metrics.items():
        message.metrics[key] = float(value)
    return message.SerializeToString()


@dataclass(frozen=True)
class Sequence_:
    tokens: Sequence[int]
    logprobs: Sequence[float]
    stop: bool  # stopped on its own (else: max_tokens)


def sample_response(sequences: Sequence[Sequence_],
                    prompt_logprobs: Sequence[float | None] | None = None) -> bytes:
    """A serialized ``SampleResponse``: the sampled sequences (int32 tokens, float32 logprobs)
    and, if asked, the prompt's logprobs (NaN where nothing predicts: the first token)."""
    message = pb().SampleResponse()
    for s in sequences:
        sequence = message.sequences.add()
        sequence.stop_reason = 0 if s.stop else 1
        sequence.tokens = np.asarray(s.tokens, dtype=np.int32).tobytes()
        sequence.logprobs = np.asarray(s.logprobs, dtype=np.float32).tobytes()
    if prompt_logprobs is not None:
        values = [np.nan if x is None else x for x in prompt_logprobs]
        message.prompt_logprobs = np.asarray(values, dtype=np.float32).tobytes()
    return message.SerializeToString()
