# Pretraining recipes at a 10-CPU-minute budget (tiny size, sotu, SST-2/MRPC): 5 arm(s) x 3 seed(s); run from /work/main
# [1/36] arm=* seed=* stage=vocab (done)
bertlab vocab --corpus default --size 8000 --out runs/recipes/_study/vocab/vocab.txt
# [2/36] arm=bert seed=* stage=pretrain (done)
bertlab pretrain --workdir runs/recipes/bert/pretrain --config configs/pretrain.py:bert,variant=tiny --config.data.vocab=runs/recipes/_study/vocab/vocab.txt --config.data.max_seq_length=128 --config.data.batch_size=128 --config.train.budget_minutes=10 --config.train.budget_clock=cpu --config.train.eval_every=0 --config.train.checkpoint_every=500 --config.train.eval_batches=20 --config.data.eval_mask_rate=0.15 --config.data.max_predictions=20 --config.optimizer.grad_accum_steps=1
# [3/36] arm=bert seed=0 stage=sst2 (done)
bertlab finetune --config configs/finetune.py:task=sst2 --workdir runs/recipes/bert/seed_0/sst2 --config.model.init_from=runs/recipes/bert/pretrain --config.data.data_dir=../shared/data/glue_data --config.data.max_train_examples=4000 --config.train.seed=0 --config.optimizer.lr=1e-4 --config.train.epochs=3
# [4/36] arm=bert seed=0 stage=mrpc (done)
bertlab finetune --config configs/finetune.py:task=mrpc --workdir runs/recipes/bert/seed_0/mrpc --config.model.init_from=runs/recipes/bert/pretrain --config.data.data_dir=../shared/data/glue_data --config.data.max_train_examples=0 --config.train.seed=0 --config.optimizer.lr=1e-4 --config.train.epochs=3
# [5/36] arm=bert seed=1 stage=sst2 (done)
bertlab finetune --config configs/finetune.py:task=sst2 --workdir runs/recipes/bert/seed_1/sst2 --config.model.init_from=runs/recipes/bert/pretrain --config.data.data_dir=../shared/data/glue_data --config.data.max_train_examples=4000 --config.train.seed=1 --config.optimizer.lr=1e-4 --config.train.epochs=3
# [6/36] arm=bert seed=1 stage=mrpc (done)
bertlab finetune --config configs/finetune.py:task=mrpc --workdir runs/recipes/bert/seed_1/mrpc --config.model.init_from=runs/recipes/bert/pretrain --config.data.data_dir=../shared/data/glue_data --config.data.max_train_examples=0 --config.train.seed=1 --config.optimizer.lr=1e-4 --config.train.epochs=3
# [7/36] arm=bert seed=2 stage=sst2 (done)
bertlab finetune --config configs/finetune.py:task=sst2 --workdir runs/recipes/bert/seed_2/sst2 --config.model.init_from=runs/recipes/bert/pretrain --config.data.data_dir=../shared/data/glue_data --config.data.max_train_examples=4000 --config.train.seed=2 --config.optimizer.lr=1e-4 --config.train.epochs=3
# [8/36] arm=bert seed=2 stage=mrpc (done)
bertlab finetune --config configs/finetune.py:task=mrpc --workdir runs/recipes/bert/seed_2/mrpc --config.model.init_from=runs/recipes/bert/pretrain --config.data.data_dir=../shared/data/glue_data --config.data.max_train_examples=0 --config.train.seed=2 --config.optimizer.lr=1e-4 --config.train.epochs=3
# [9/36] arm=roberta seed=* stage=pretrain (done)
bertlab pretrain --workdir runs/recipes/roberta/pretrain --config configs/pretrain.py:roberta,variant=tiny --config.data.vocab=runs/recipes/_study/vocab/vocab.txt --config.data.max_seq_length=128 --config.data.batch_size=128 --config.train.budget_minutes=10 --config.train.budget_clock=cpu --config.train.eval_every=0 --config.train.checkpoint_every=500 --config.train.eval_batches=20 --config.data.eval_mask_rate=0.15 --config.data.max_predictions=20 --config.optimizer.grad_accum_steps=1
# [10/36] arm=roberta seed=0 stage=sst2 (done)
bertlab finetune --config configs/finetune.py:task=sst2 --workdir runs/recipes/roberta/seed_0/sst2 --config.model.init_from=runs/recipes/roberta/pretrain --config.data.data_dir=../shared/data/glue_data --config.data.max_train_examples=4000 --config.train.seed=0 --config.optimizer.lr=1e-4 --config.train.epochs=3
# [11/36] arm=roberta seed=0 stage=mrpc (done)
bertlab finetune --config configs/finetune.py:task=mrpc --workdir runs/recipes/roberta/seed_0/mrpc --config.model.init_from=runs/recipes/roberta/pretrain --config.data.data_dir=../shared/data/glue_data --config.data.max_train_examples=0 --config.train.seed=0 --config.optimizer.lr=1e-4 --config.train.epochs=3
# [12/36] arm=roberta seed=1 stage=sst2 (done)
bertlab finetune --config configs/finetune.py:task=sst2 --workdir runs/recipes/roberta/seed_1/sst2 --config.model.init_from=runs/recipes/roberta/pretrain --config.data.data_dir=../shared/data/glue_data --config.data.max_train_examples=4000 --config.train.seed=1 --config.optimizer.lr=1e-4 --config.train.epochs=3
# [13/36] arm=roberta seed=1 stage=mrpc (done)
bertlab finetune --config configs/finetune.py:task=mrpc --workdir runs/recipes/roberta/seed_1/mrpc --config.model.init_from=runs/recipes/roberta/pretrain --config.data.data_dir=../shared/data/glue_data --config.data.max_train_examples=0 --config.train.seed=1 --config.optimizer.lr=1e-4 --config.train.epochs=3
# [14/36] arm=roberta seed=2 stage=sst2 (done)
bertlab finetune --config configs/finetune.py:task=sst2 --workdir runs/recipes/roberta/seed_2/sst2 --config.model.init_from=runs/recipes/roberta/pretrain --config.data.data_dir=../shared/data/glue_data --config.data.max_train_examples=4000 --config.train.seed=2 --config.optimizer.lr=1e-4 --config.train.epochs=3
# [15/36] arm=roberta seed=2 stage=mrpc (done)
bertlab finetune --config configs/finetune.py:task=mrpc --workdir runs/recipes/roberta/seed_2/mrpc --config.model.init_from=runs/recipes/roberta/pretrain --config.data.data_dir=../shared/data/glue_data --config.data.max_train_examples=0 --config.train.seed=2 --config.optimizer.lr=1e-4 --config.train.epochs=3
# [16/36] arm=cramming seed=* stage=pretrain (done)
bertlab pretrain --workdir runs/recipes/cramming/pretrain --config configs/pretrain.py:cramming,variant=tiny --config.data.vocab=runs/recipes/_study/vocab/vocab.txt --config.data.max_seq_length=128 --config.data.batch_size=128 --config.train.budget_minutes=10 --config.train.budget_clock=cpu --config.train.eval_every=0 --config.train.checkpoint_every=500 --config.train.eval_batches=20 --config.data.eval_mask_rate=0.15 --config.data.max_predictions=32 --config.optimizer.grad_accum_steps=8
# [17/36] arm=cramming seed=0 stage=sst2 (done)
bertlab finetune --config configs/finetune.py:task=sst2 --workdir runs/recipes/cramming/seed_0/sst2 --config.model.init_from=runs/recipes/cramming/pretrain --config.data.data_dir=../shared/data/glue_data --config.data.max_train_examples=4000 --config.train.seed=0 --config.optimizer.lr=1e-4 --config.train.epochs=3
# [18/36] arm=cramming seed=0 stage=mrpc (done)
bertlab finetune --config configs/finetune.py:task=mrpc --workdir runs/recipes/cramming/seed_0/mrpc --config.model.init_from=runs/recipes/cramming/pretrain --config.data.data_dir=../shared/data/glue_data --config.data.max_train_examples=0 --config.train.seed=0 --config.optimizer.lr=1e-4 --config.train.epochs=3
# [19/36] arm=cramming seed=1 stage=sst2 (done)
bertlab finetune --config configs/finetune.py:task=sst2 --workdir runs/recipes/cramming/seed_1/sst2 --config.model.init_from=runs/recipes/cramming/pretrain --config.data.data_dir=../shared/data/glue_data --config.data.max_train_examples=4000 --config.train.seed=1 --config.optimizer.lr=1e-4 --config.train.epochs=3
# [20/36] arm=cramming seed=1 stage=mrpc (done)
bertlab finetune --config configs/finetune.py:task=mrpc --workdir runs/recipes/cramming/seed_1/mrpc --config.model.init_from=runs/recipes/cramming/pretrain --config.data.data_dir=../shared/data/glue_data --config.data.max_train_examples=0 --config.train.seed=1 --config.optimizer.lr=1e-4 --config.train.epochs=3
# [21/36] arm=cramming seed=2 stage=sst2 (done)
bertlab finetune --config configs/finetune.py:task=sst2 --workdir runs/recipes/cramming/seed_2/sst2 --config.model.init_from=runs/recipes/cramming/pretrain --config.data.data_dir=../shared/data/glue_data --config.data.max_train_examples=4000 --config.train.seed=2 --config.optimizer.lr=1e-4 --config.train.epochs=3
# [22/36] arm=cramming seed=2 stage=mrpc (done)
bertlab finetune --config configs/finetune.py:task=mrpc --workdir runs/recipes/cramming/seed_2/mrpc --config.model.init_from=runs/recipes/cramming/pretrain --config.data.data_dir=../shared/data/glue_data --config.data.max_train_examples=0 --config.train.seed=2 --config.optimizer.lr=1e-4 --config.train.epochs=3
# [23/36] arm=mosaicbert seed=* stage=pretrain (done)
bertlab pretrain --workdir runs/recipes/mosaicbert/pretrain --config configs/pretrain.py:mosaicbert,variant=tiny --config.data.vocab=runs/recipes/_study/vocab/vocab.txt --config.data.max_seq_length=128 --config.data.batch_size=128 --config.train.budget_minutes=10 --config.train.budget_clock=cpu --config.train.eval_every=0 --config.train.checkpoint_every=500 --config.train.eval_batches=20 --config.data.eval_mask_rate=0.15 --config.data.max_predictions=39 --config.optimizer.grad_accum_steps=1
# [24/36] arm=mosaicbert seed=0 stage=sst2 (done)
bertlab finetune --config configs/finetune.py:task=sst2 --workdir runs/recipes/mosaicbert/seed_0/sst2 --config.model.init_from=runs/recipes/mosaicbert/pretrain --config.data.data_dir=../shared/data/glue_data --config.data.max_train_examples=4000 --config.train.seed=0 --config.optimizer.lr=1e-4 --config.train.epochs=3
# [25/36] arm=mosaicbert seed=0 stage=mrpc (done)
bertlab finetune --config configs/finetune.py:task=mrpc --workdir runs/recipes/mosaicbert/seed_0/mrpc --config.model.init_from=runs/recipes/mosaicbert/pretrain --config.data.data_dir=../shared/data/glue_data --config.data.max_train_examples=0 --config.train.seed=0 --config.optimizer.lr=1e-4 --config.train.epochs=3
# [26/36] arm=mosaicbert seed=1 stage=sst2 (done)
bertlab finetune --config configs/finetune.py:task=sst2 --workdir runs/recipes/mosaicbert/seed_1/sst2 --config.model.init_from=runs/recipes/mosaicbert/pretrain --config.data.data_dir=../shared/data/glue_data --config.data.max_train_examples=4000 --config.train.seed=1 --config.optimizer.lr=1e-4 --config.train.epochs=3
# [27/36] arm=mosaicbert seed=1 stage=mrpc (done)
bertlab finetune --config configs/finetune.py:task=mrpc --workdir runs/recipes/mosaicbert/seed_1/mrpc --config.model.init_from=runs/recipes/mosaicbert/pretrain --config.data.data_dir=../shared/data/glue_data --config.data.max_train_examples=0 --config.train.seed=1 --config.optimizer.lr=1e-4 --config.train.epochs=3
# [28/36] arm=mosaicbert seed=2 stage=sst2 (done)
bertlab finetune --config configs/finetune.py:task=sst2 --workdir runs/recipes/mosaicbert/seed_2/sst2 --config.model.init_from=runs/recipes/mosaicbert/pretrain --config.data.data_dir=../shared/data/glue_data --config.data.max_train_examples=4000 --config.train.seed=2 --config.optimizer.lr=1e-4 --config.train.epochs=3
# [29/36] arm=mosaicbert seed=2 stage=mrpc (done)
bertlab finetune --config configs/finetune.py:task=mrpc --workdir runs/recipes/mosaicbert/seed_2/mrpc --config.model.init_from=runs/recipes/mosaicbert/pretrain --config.data.data_dir=../shared/data/glue_data --config.data.max_train_examples=0 --config.train.seed=2 --config.optimizer.lr=1e-4 --config.train.epochs=3
# [30/36] arm=modernbert seed=* stage=pretrain (done)
bertlab pretrain --workdir runs/recipes/modernbert/pretrain --config configs/pretrain.py:modernbert,variant=tiny --config.data.vocab=runs/recipes/_study/vocab/vocab.txt --config.data.max_seq_length=128 --config.data.batch_size=128 --config.train.budget_minutes=10 --config.train.budget_clock=cpu --config.train.eval_every=0 --config.train.checkpoint_every=500 --config.train.eval_batches=20 --config.data.eval_mask_rate=0.15 --config.data.max_predictions=39 --config.optimizer.grad_accum_steps=1
# [31/36] arm=modernbert seed=0 stage=sst2 (done)
bertlab finetune --config configs/finetune.py:task=sst2 --workdir runs/recipes/modernbert/seed_0/sst2 --config.model.init_from=runs/recipes/modernbert/pretrain --config.data.data_dir=../shared/data/glue_data --config.data.max_train_examples=4000 --config.train.seed=0 --config.optimizer.lr=1e-4 --config.train.epochs=3
# [32/36] arm=modernbert seed=0 stage=mrpc (done)
bertlab finetune --config configs/finetune.py:task=mrpc --workdir runs/recipes/modernbert/seed_0/mrpc --config.model.init_from=runs/recipes/modernbert/pretrain --config.data.data_dir=../shared/data/glue_data --config.data.max_train_examples=0 --config.train.seed=0 --config.optimizer.lr=1e-4 --config.train.epochs=3
# [33/36] arm=modernbert seed=1 stage=sst2 (done)
bertlab finetune --config configs/finetune.py:task=sst2 --workdir runs/recipes/modernbert/seed_1/sst2 --config.model.init_from=runs/recipes/modernbert/pretrain --config.data.data_dir=../shared/data/glue_data --config.data.max_train_examples=4000 --config.train.seed=1 --config.optimizer.lr=1e-4 --config.train.epochs=3
# [34/36] arm=modernbert seed=1 stage=mrpc (done)
bertlab finetune --config configs/finetune.py:task=mrpc --workdir runs/recipes/modernbert/seed_1/mrpc --config.model.init_from=runs/recipes/modernbert/pretrain --config.data.data_dir=../shared/data/glue_data --config.data.max_train_examples=0 --config.train.seed=1 --config.optimizer.lr=1e-4 --config.train.epochs=3
# [35/36] arm=modernbert seed=2 stage=sst2 (done)
bertlab finetune --config configs/finetune.py:task=sst2 --workdir runs/recipes/modernbert/seed_2/sst2 --config.model.init_from=runs/recipes/modernbert/pretrain --config.data.data_dir=../shared/data/glue_data --config.data.max_train_examples=4000 --config.train.seed=2 --config.optimizer.lr=1e-4 --config.train.epochs=3
# [36/36] arm=modernbert seed=2 stage=mrpc (done)
bertlab finetune --config configs/finetune.py:task=mrpc --workdir runs/recipes/modernbert/seed_2/mrpc --config.model.init_from=runs/recipes/modernbert/pretrain --config.data.data_dir=../shared/data/glue_data --config.data.max_train_examples=0 --config.train.seed=2 --config.optimizer.lr=1e-4 --config.train.epochs=3
