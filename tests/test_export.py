"""Export: ONNX (dynamic batch, stated opset) agrees with PyTorch under onnxruntime; torch.export round trip."""
import pytest
import timm
import torch

onnx = pytest.importorskip('onnx')
ort = pytest.importorskip('onnxruntime')
pytest.importorskip('onnxscript')

from logoformer_timm.video.export import ONNX_OPSET, main  # noqa: E402


def test_export_cli_onnx_parity_and_torch_export(tmp_path, capsys):
    from safetensors.torch import save_file
    torch.manual_seed(3)
    model = timm.create_model('logoformer_tiny').eval()
    ckpt = tmp_path / 'tiny.safetensors'
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(ckpt))
    out_onnx, out_pt2 = tmp_path / 'tiny.onnx', tmp_path / 'tiny.pt2'
    code = main(['--model', 'logoformer_tiny', '--checkpoint', str(ckpt), '--onnx', str(out_onnx),
                 '--torch-export', str(out_pt2)])
    assert code == 0 and f'ONNX opset {ONNX_OPSET}' in capsys.readouterr().out

    proto = onnx.load(str(out_onnx))
    assert {o.domain: o.version for o in proto.opset_import}[''] == ONNX_OPSET
    session = ort.InferenceSession(str(out_onnx), providers=['CPUExecutionProvider'])
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, out.name) == ('clip', 'logits')
    assert isinstance(inp.shape[0], str) and inp.shape[1:] == [3, 16, 112, 112]
    program = torch.export.load(str(out_pt2)).module()
    for batch in (1, 3):  # the example batch was 2: both other sizes go through the dynamic axis
        x = torch.rand(batch, 3, 16, 112, 112)
        with torch.inference_mode():
            expected = model(x)
        got = session.run(None, {'clip': x.numpy()})[0]
        assert got.shape == (batch, 7)
        assert abs(torch.from_numpy(got) - expected).max().item() < 1e-4
        torch.testing.assert_close(program(x), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize('args, message', [
    (['--model', 'logoformer_tiny', '--random-init'], 'say what to write'),
    (['--model', 'logoformer_tiny', '--onnx', 'x.onnx'], '--checkpoint PATH, or --random-init'),
])
def test_export_usage_errors(args, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize('args, message', [
    (['--model', 'nope', '--random-init', '--onnx', '{tmp}/x.onnx'], "Unknown model 'nope'"),
    (['--model', 'logoformer_tiny', '--random-init', '--onnx', '{tmp}/no/such/dir/x.onnx'], 'does not exist'),
])
def test_export_user_errors(tmp_path, args, message, capsys):
    assert main([a.format(tmp=tmp_path) for a in args]) == 1
    err = capsys.readouterr().err
    assert err.startswith('export: error:') and message in err and 'Traceback' not in err
