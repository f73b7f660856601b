"""Render scenes with Blender (Cycles, CPU, denoised). Runs under the bpy interpreter, not trimpi's venv.

Usage: python _bpy_script.py JOB.json. The job (written by blender_render.py) holds the camera, lights,
materials and, per image, the output path and the objects as primitives. One line "rendered <i>" is
printed per finished image. Only the standard library and bpy are used here.
"""

import json
import math
import os
import sys

try:
    import bpy  # noqa: I001 - bpy must come first: it puts addon_utils and mathutils on the path
    import addon_utils
    from mathutils import Vector
except ImportError as e:  # pragma: no cover - reported by the caller as a one-line error
    print(f"bpy is not importable: {e}", file=sys.stderr)
    sys.exit(3)


def material(name, rgb, metal):
    mat = bpy.data.materials.new(name)
    if mat.node_tree is None:  # Blender < 5 creates materials without nodes
        mat.use_nodes = True
    bsdf = mat.node_tree.nodes["Principled BSDF"]
    bsdf.inputs["Base Color"].default_value = (*rgb, 1.0)
    bsdf.inputs["Metallic"].default_value = 1.0 if metal else 0.0
    bsdf.inputs["Roughness"].default_value = 0.2 if metal else 0.75
    return mat


def setup(job):
    bpy.ops.wm.read_factory_settings(use_empty=True)
    addon_utils.enable("cycles", default_set=True)
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = job["samples"]
    scene.cycles.use_denoising = True
    scene.render.resolution_x, scene.render.resolution_y = job["width"], job["height"]
    scene.render.resolution_percentage = 100
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_mode = "RGB"
    scene.view_settings.view_transform = "Standard"
    world = bpy.data.worlds.new("world")
    if world.node_tree is None:
        world.use_nodes = True
    world.node_tree.nodes["Background"].inputs["Color"].default_value = (1.0, 1.0, 1.0, 1.0)
    world.node_tree.nodes["Background"].inputs["Strength"].default_value = job["ambient"]
    scene.world = world
    cam = job["camera"]
    data = bpy.data.cameras.new("camera")
    data.lens, data.sensor_width, data.sensor_fit = cam["lens_mm"], cam["sensor_mm"], "HORIZONTAL"
    camera = bpy.data.objects.new("camera", data)
    camera.location = cam["location"]
    camera.rotation_euler = [math.radians(a) for a in cam["rotation_deg"]]
    scene.collection.objects.link(camera)
    scene.camera = camera
    for i, (direction, intensity) in enumerate(job["lights"]):
        sun = bpy.data.lights.new(f"light{i}", "SUN")
        sun.energy, sun.angle = intensity * job["sun_scale"], math.radians(8.0)
        obj = bpy.data.objects.new(f"light{i}", sun)
        obj.rotation_euler = Vector(direction).to_track_quat("Z", "Y").to_euler()
        scene.collection.objects.link(obj)
    bpy.ops.mesh.primitive_plane_add(size=200.0, location=(0.0, 0.0, 0.0))
    g = job["ground_albedo"]
    bpy.context.active_object.data.materials.append(material("ground", (g, g, g), False))
    return scene


def add_object(obj, index):
    x, y, z = obj["center"]
    r = obj["r"]
    if obj["kind"] == "sphere":
        bpy.ops.mesh.primitive_uv_sphere_add(radius=r, location=(x, y, z), segments=64, ring_count=32)
        bpy.ops.object.shade_smooth()
    elif obj["kind"] == "cube":
        bpy.ops.mesh.primitive_cube_add(size=2 * r, location=(x, y, z), rotation=(0, 0, math.radians(obj["rotation"])))
        bevel = bpy.context.active_object.modifiers.new("bevel", "BEVEL")
        bevel.width, bevel.segments = 0.08 * r, 3
    else:
        bpy.ops.mesh.primitive_cylinder_add(radius=r, depth=2 * r, location=(x, y, z), vertices=64,
                                            rotation=(0, 0, math.radians(obj["rotation"])))
        bpy.ops.object.shade_smooth_by_angle(angle=math.radians(40.0))
    new = bpy.context.active_object
    new.name = f"object{index}"
    new.data.materials.append(material(f"mat{index}", obj["rgb"], obj["metal"]))
    return new


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        job = json.load(f)
    scene = setup(job)
    for i, image in enumerate(job["images"]):
        added = [add_object(o, k) for k, o in enumerate(image["objects"])]
        head, tail = os.path.split(image["path"])
        tmp = os.path.join(head, f".{tail}.tmp.png")
        scene.render.filepath = tmp
        bpy.ops.render.render(write_still=True)
        os.replace(tmp, image["path"])
        for obj in added:
            mesh = obj.data
            bpy.data.objects.remove(obj, do_unlink=True)
            bpy.data.meshes.remove(mesh)
        print(f"rendered {i}", flush=True)


if __name__ == "__main__":
    main()
