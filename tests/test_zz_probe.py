import torch, interp, time
def test_probe(tiny_gpt2, tiny_llama):
    for m in (tiny_gpt2, tiny_llama):
        b = m.bridge
        ids = torch.tensor([b.tokenizer(interp.CHALLENGE_PROMPT)["input_ids"]])
        with torch.inference_mode():
            for i in range(3):
                t=time.time(); b(ids); t1=time.time()-t
                t=time.time(); m.hf(ids); t2=time.time()-t
                print("bridge", t1, "hf", t2)
        t=time.time(); interp.run_with_scaling(b, ids, {1: 0.6}); print("rws", time.time()-t)
        import cProfile, pstats
        pr = cProfile.Profile(); pr.enable()
        with torch.inference_mode(): b(ids)
        pr.disable(); pstats.Stats(pr).sort_stats("cumtime").print_stats(12)
