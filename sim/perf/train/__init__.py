"""Training from physics: a parallel layout's step time, memory per card and MFU.

One job per module, imports pointing down the list:

    types             the job, the layout, memory and step records, `TrainingLayoutError`
    layout            a layout's divisibility rules and its pipeline split
    network           per-card bandwidth of a collective over the scale-up domain or the NIC
    fp8               what an FP8 run stores in FP8, and its quantisation traffic
    memory            memory per card: weights, gradients, optimizer, activations, logits
    context_parallel  context parallelism's exchange per layer and micro-batch
    hardware          the card as a training framework runs it (the training fit)
    step              one optimizer step's time, parts and MFU
    search            the layouts a recipe would try, and the fastest that fits
    interruptions     failures, checkpoints and restarts: goodput

`sim.perf.training` plans a job on top of these (`plan_training`).
"""
