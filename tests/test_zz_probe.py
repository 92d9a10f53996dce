import torch, interp
def test_probe(tiny_gpt2, tiny_llama, embedded):
    for m in (tiny_gpt2, tiny_llama):
        b = m.bridge
        ids = torch.tensor([b.tokenizer(interp.CHALLENGE_PROMPT)["input_ids"]])
        cl = interp.run_with_scaling(b, ids, {}); l3 = interp.run_with_scaling(b, ids, {-1: 0.6}); l0 = interp.run_with_scaling(b, ids, {0: 0.6})
        print("last", (l3-cl).abs().max().item(), "first", (l0-cl).abs().max().item(), cl.abs().max().item())
        with torch.inference_mode(): print("hf eq", torch.equal(m.hf(ids).logits, cl))
    b = embedded
    ids = torch.tensor([b.tokenizer(interp.CHALLENGE_PROMPT)["input_ids"]])
    cl = interp.run_with_scaling(b, ids, {}); l3 = interp.run_with_scaling(b, ids, {-1: 0.6}); l0 = interp.run_with_scaling(b, ids, {0: 0.6})
    print("emb last", (l3-cl).abs().max().item(), "first", (l0-cl).abs().max().item(), cl.abs().max().item(), b.cfg.n_layers, b.interp_info)
