"""Loads an emoji split made by `dalle dataset emoji` (64 px PNGs, alpha flattened onto white) into /tmp/exp/{train,val}.npy for dvae_recipe.py. Usage: python3 dvae_recipe_data.py DATA_DIR"""
import numpy as np, os, sys
from PIL import Image
os.makedirs('/tmp/exp', exist_ok=True)
for split in ['train','val']:
    d=f'{sys.argv[1]}/{split}'
    files=sorted(f for f in os.listdir(d) if f.endswith('.png'))
    arr=np.zeros((len(files),3,64,64),np.uint8)
    for i,f in enumerate(files):
        im=Image.open(os.path.join(d,f)).convert('RGBA')
        if im.size!=(64,64): im=im.resize((64,64),Image.LANCZOS)
        bg=Image.new('RGBA',im.size,(255,255,255,255)); bg.alpha_composite(im)
        arr[i]=np.asarray(bg.convert('RGB')).transpose(2,0,1)
    np.save(f'/tmp/exp/{split}.npy',arr); print(split,arr.shape)
